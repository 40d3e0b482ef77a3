package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/urfave/cli/v2"
)

// keygenCommand makes the daemon's identity key beforehand, so that the
// public key can be handed to clients before chattyd first starts.
func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:      "keygen",
		Usage:     "make a new Ed25519 identity key (mode 0600) and its .pub beside it",
		ArgsUsage: " ",
		Description: "keygen refuses to overwrite an existing key, and makes the key's directory (mode 0700) when it is missing. Point identity.key_file at the key " +
			"(or leave it empty when --out is the default) and give the .pub file to clients.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "write the private key to `PATH` (default: identity.key in chattyd's state directory)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return exitcode.Usagef("keygen: unexpected argument %q; name the file with --out", c.Args().First())
			}
			path := c.String("out")
			if path == "" {
				path = config.DefaultKeyFile()
			}
			// A missing directory is made private (0700), as the key's
			// own directory should be, and said.
			dir := filepath.Dir(path)
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return fmt.Errorf("keygen: make the directory %s: %w", dir, err)
				}
				fmt.Fprintf(c.App.Writer, "created directory %s (mode 0700)\n", dir)
			}
			id, err := identity.Generate(path)
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "private key: %s\npublic key:  %s\nfingerprint: %s\n",
				id.Path, identity.PublicPath(id.Path), id.Fingerprint())
			return nil
		},
	}
}
