package main

import (
	"io"

	"github.com/chatty-dev/chatty/internal/manpage"

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
			page, err := manpage.Page(c.App, 8)
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}
