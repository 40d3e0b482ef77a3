package main

import (
	"errors"
	"fmt"
	"slices"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// loadConfig reads the configuration named by --config (or the built-in
// one) and applies the command-line overrides.
func loadConfig(c *cli.Context) (config.Config, error) {
	return loadConfigFile(c, flagIn(c, "config").String("config"))
}

// flagIn returns the context whose value of the flag counts: the
// innermost command on whose command line it was given, so that a flag
// works before and after a command, else the top level (its default or
// environment variable).
func flagIn(c *cli.Context, name string) *cli.Context {
	lineage := c.Lineage()
	for _, ctx := range lineage {
		if slices.Contains(ctx.LocalFlagNames(), name) {
			return ctx
		}
	}
	for i := len(lineage) - 1; i >= 0; i-- {
		if lineage[i].App != nil { // the outermost is urfave/cli's own, empty
			return lineage[i]
		}
	}
	return c
}

// flagSet reports whether the flag was given, before or after a command.
func flagSet(c *cli.Context, name string) bool { return flagIn(c, name).IsSet(name) }

// loadConfigFile is loadConfig for the file at path ("" for the built-in
// configuration).
func loadConfigFile(c *cli.Context, path string) (config.Config, error) {
	var cfg config.Config
	var err error
	switch {
	case flagIn(c, "demo").Bool("demo") && path != "":
		return cfg, exitcode.Usagef("--demo and --config exclude each other: the demo has its own configuration")
	case flagIn(c, "demo").Bool("demo"):
		cfg, err = config.Parse("(built-in demo)", config.DemoYAML)
	default:
		cfg, err = config.Load(path)
	}
	if err != nil {
		return cfg, err
	}
	if err := cfg.Apply(overrides(c)); err != nil {
		var ue *config.UsageError
		if errors.As(err, &ue) {
			return cfg, exitcode.Usagef("%s", err)
		}
		return cfg, err
	}
	return cfg, nil
}

// overrides returns the configuration settings given as flags, before
// or after a command.
func overrides(c *cli.Context) config.Overrides {
	str := func(name string) *string {
		if !flagSet(c, name) {
			return nil
		}
		v := flagIn(c, name).String(name)
		return &v
	}
	num := func(name string) *int {
		if !flagSet(c, name) {
			return nil
		}
		v := flagIn(c, name).Int(name)
		return &v
	}
	return config.Overrides{
		Listen:        str("listen"),
		IP:            str("ip"),
		Port:          num("port"),
		Workers:       num("workers"),
		Verbose:       flagIn(c, "verbose").Bool("verbose"),
		LogFormat:     str("log-format"),
		ControlSocket: str("control-socket"),
	}
}

// fileArg returns the configuration file named by a command's one
// argument or by --config, refusing both at once and more arguments.
func fileArg(c *cli.Context) (string, error) {
	name := c.Command.Name
	switch {
	case c.NArg() > 1:
		return "", exitcode.Usagef("%s: name one file, not %d (flags go before the file: chattyd %s --workers 8 FILE)", name, c.NArg(), name)
	case c.NArg() == 1 && flagSet(c, "config") && flagIn(c, "config").String("config") != c.Args().First():
		return "", exitcode.Usagef("%s: the file is named twice (%s and --config %s); name it once", name, c.Args().First(), flagIn(c, "config").String("config"))
	case c.NArg() == 1:
		return c.Args().First(), nil
	}
	return flagIn(c, "config").String("config"), nil
}

func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:      "check-config",
		Usage:     "validate a configuration file and report every error",
		ArgsUsage: "[FILE]",
		Flags:     []cli.Flag{configFlag()}, // also after the command
		Action: func(c *cli.Context) error {
			path, err := fileArg(c)
			if err != nil {
				return err
			}
			if path == "" {
				return exitcode.Usagef("check-config: name a file (chattyd check-config FILE or --config FILE)")
			}
			if _, err := config.Load(path); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s: configuration is valid\n", path)
			return nil
		},
	}
}

func printConfigCommand() *cli.Command {
	return &cli.Command{
		Name:      "print-config",
		Usage:     "print the effective configuration (file, defaults and flags) as YAML",
		ArgsUsage: "[FILE]",
		Flags:     daemonFlags(), // the overrides, also after the command
		Action: func(c *cli.Context) error {
			path, err := fileArg(c)
			if err != nil {
				return err
			}
			cfg, err := loadConfigFile(c, path)
			if err != nil {
				return err
			}
			enc := yaml.NewEncoder(c.App.Writer)
			enc.SetIndent(2)
			if err := enc.Encode(cfg); err != nil {
				return err
			}
			return enc.Close()
		},
	}
}
