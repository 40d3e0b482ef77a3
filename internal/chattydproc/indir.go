package chattydproc

import (
	"os"
	"path/filepath"
)

// Files are the paths StartInDir gives a chattyd in its directory.
type Files struct {
	Config string // chattyd.yaml, the configuration
	Socket string // control.sock, the control socket
	Log    string // chattyd.log, its standard output and error
}

// StartInDir starts bin as a chattyd with a directory of its own, as the
// benchmark tools run it: config written to dir/chattyd.yaml, its control
// socket at dir/control.sock and its output in dir/chattyd.log, killed if
// the thread that started it ends.
func StartInDir(bin, dir, config string) (*Process, Files, error) {
	f := Files{
		Config: filepath.Join(dir, "chattyd.yaml"),
		Socket: filepath.Join(dir, "control.sock"),
		Log:    filepath.Join(dir, "chattyd.log"),
	}
	if err := os.WriteFile(f.Config, []byte(config), 0o600); err != nil {
		return nil, f, err
	}
	logFile, err := os.Create(f.Log)
	if err != nil {
		return nil, f, err
	}
	defer logFile.Close() // chattyd has its own copy
	p, err := Start(Options{
		Bin:            bin,
		ControlSocket:  f.Socket,
		Args:           []string{"--config", f.Config},
		Stdout:         logFile,
		Stderr:         logFile,
		KillWithParent: true,
	})
	return p, f, err
}
