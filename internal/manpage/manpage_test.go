package manpage

import (
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestSynopsis(t *testing.T) {
	app := &cli.App{
		Name: "prog",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Usage: "the socket `PATH`"},
			&cli.StringFlag{Name: "log-format"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}},
			&cli.BoolFlag{Name: "secret", Hidden: true},
			cli.HelpFlag,
		},
		Commands: []*cli.Command{
			{Name: "status", Flags: []cli.Flag{&cli.BoolFlag{Name: "json"}}},
			{Name: "send", ArgsUsage: "TYPE MESSAGE..."},
			{Name: "man", Hidden: true},
		},
	}
	want := "prog [--socket PATH] [--log-format LOG-FORMAT] [--verbose] COMMAND [ARGS]\n" +
		"prog [GLOBAL OPTIONS] status [OPTIONS]\n" +
		"prog [GLOBAL OPTIONS] send TYPE MESSAGE..."
	if got := Synopsis(app, false); got != want {
		t.Errorf("Synopsis:\n%s\nwant:\n%s", got, want)
	}
	if got := Synopsis(app, true); !strings.HasPrefix(got, "prog [--socket PATH] [--log-format LOG-FORMAT] [--verbose]\nprog [GLOBAL OPTIONS] status") {
		t.Errorf("Synopsis without a command:\n%s", got)
	}

	app.UsageText = Synopsis(app, false)
	page, err := Page(app, 1)
	if err != nil {
		t.Fatal(err)
	}
	syn := section(t, page, "SYNOPSIS")
	if strings.Contains(syn, "]=[value]") || strings.Contains(syn, "--secret") {
		t.Errorf("SYNOPSIS:\n%s", syn)
	}
	for _, l := range strings.Split(want, "\n") {
		if !strings.Contains(syn, l) {
			t.Errorf("SYNOPSIS lacks %q:\n%s", l, syn)
		}
	}
	if strings.Count(syn, ".br\n") != 2 {
		t.Errorf("SYNOPSIS wants its three forms on lines of their own:\n%s", syn)
	}
}

// section returns the text of a roff page's section.
func section(t *testing.T, page, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(page, ".SH "+name+"\n")
	if !ok {
		t.Fatalf("no %s section in:\n%s", name, page)
	}
	text, _, _ := strings.Cut(rest, ".SH ")
	return text
}
