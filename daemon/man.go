package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// manCommand prints chattyd's manual page, generated from its flags and
// commands; the package ships it as chattyd(8).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print chattyd's manual page (roff)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("make manual page: %w", err)
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}
