package main

import (
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/pool"
)

// guardCommand is "chattyd guard", hidden: the process the pool runs
// beside its workers that kills what is left of their process groups
// when chattyd dies, however it dies (see internal/pool/guard.go). It reads
// the pool's records from its standard input and logs to standard error,
// which it shares with chattyd.
func guardCommand() *cli.Command {
	return &cli.Command{
		Name:   "guard",
		Usage:  "kill the pool's process groups when chattyd dies (started by the pool)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			l := logrus.New()
			l.SetOutput(os.Stderr)
			l.SetFormatter(logging.NewFormatter(false, logging.UnderJournal()))
			err := pool.RunGuard(os.Stdin, os.Stdout, logrus.NewEntry(l).WithField(logging.FieldComponent, "guard"))
			if err != nil {
				return cli.Exit("chattyd guard: "+err.Error(), 1)
			}
			return nil
		},
	}
}

// guardArgs is the guard's command for the pool: exe, chattyd itself.
func guardArgs(exe string) []string { return []string{exe, "guard"} }
