// Package manpage renders a program's manual page from its urfave/cli
// definition, with a synopsis that reads like one: each form of the
// command line, its flags with their arguments, then every command.
package manpage

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// template is urfave/cli's manual page template with the SYNOPSIS taken
// from the App's UsageText (set it with Synopsis) instead of a list of
// flags written as [--flag]=[value], and without the separate Usage block
// that repeated it.
const template = `{{if gt .SectionNum 0}}% {{ .App.Name }} {{ .SectionNum }}

{{end}}# NAME

{{ .App.Name }}{{ if .App.Usage }} - {{ .App.Usage }}{{ end }}

# SYNOPSIS

{{ .App.UsageText }}
{{ if .App.Description }}
# DESCRIPTION

{{ .App.Description }}
{{ end }}{{ if .GlobalArgs }}
# GLOBAL OPTIONS
{{ range $v := .GlobalArgs }}
{{ $v }}{{ end }}
{{ end }}{{ if .Commands }}
# COMMANDS
{{ range $v := .Commands }}
{{ $v }}{{ end }}{{ end }}`

// Page returns app's manual page (roff) for the manual's section.
func Page(app *cli.App, section int) (string, error) {
	// urfave/cli reads its template from this variable; every program
	// here sets it to the same value.
	cli.MarkdownDocTemplate = template
	// Two spaces end a line in the page's Markdown source: a line break
	// between the forms of the synopsis.
	a := *app
	a.UsageText = strings.ReplaceAll(app.UsageText, "\n", "  \n")
	page, err := a.ToManWithSection(section)
	if err != nil {
		return "", fmt.Errorf("make manual page: %w", err)
	}
	return page, nil
}

// Synopsis returns the forms of app's command line, one a line, for its
// UsageText: the program with its flags and a COMMAND (or, with
// withoutCommand, without one: a daemon that runs when given only flags),
// then each visible command with [OPTIONS] if it has flags of its own,
// and its ArgsUsage.
func Synopsis(app *cli.App, withoutCommand bool) string {
	var lines []string
	global := flagList(app.Flags)
	if withoutCommand {
		lines = append(lines, strings.TrimSpace(app.Name+" "+global))
	} else {
		lines = append(lines, strings.TrimSpace(app.Name+" "+global)+" COMMAND [ARGS]")
	}
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		line := app.Name
		if global != "" {
			line += " [GLOBAL OPTIONS]"
		}
		line += " " + c.Name
		if hasOwnFlags(c) {
			line += " [OPTIONS]"
		}
		if a := strings.TrimSpace(c.ArgsUsage); a != "" {
			line += " " + a
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// flagList writes flags as [--name ARG] or [--name], the help flag left out.
func flagList(flags []cli.Flag) string {
	var parts []string
	for _, f := range flags {
		if f == cli.HelpFlag {
			continue
		}
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		name := longName(f)
		d, ok := f.(cli.DocGenerationFlag)
		if !ok || !d.TakesValue() {
			parts = append(parts, "["+name+"]")
			continue
		}
		arg := placeholder(d.GetUsage())
		if arg == "" {
			arg = strings.ToUpper(strings.TrimLeft(name, "-"))
		}
		parts = append(parts, "["+name+" "+arg+"]")
	}
	return strings.Join(parts, " ")
}

// longName is the flag's first name of more than one letter, with its dashes.
func longName(f cli.Flag) string {
	names := f.Names()
	for _, n := range names {
		if len(n) > 1 {
			return "--" + n
		}
	}
	return "-" + names[0]
}

func hasOwnFlags(c *cli.Command) bool {
	for _, f := range c.Flags {
		if f == cli.HelpFlag {
			continue
		}
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		return true
	}
	return false
}

// placeholder is the `NAME` quoted in a flag's usage, as urfave/cli's help
// shows it, or "".
func placeholder(usage string) string {
	_, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return ""
	}
	name, _, ok := strings.Cut(rest, "`")
	if !ok {
		return ""
	}
	return name
}
