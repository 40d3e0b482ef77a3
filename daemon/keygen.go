package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/chatty-dev/chatty/pkg/config"
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
		Description: "keygen refuses to overwrite an existing key. Point identity.key_file at the key " +
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
				// Only the default directory is made: a mistyped --out
				// directory is better reported than created.
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					return fmt.Errorf("keygen: %w", err)
				}
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
