package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// The scripts are urfave/cli's, with the program's name filled in: they
// ask chattyctl itself for candidates with --generate-bash-completion.
// A word being completed that starts with "-" is passed as a lone "-":
// chattyctl then lists every flag of the command, and the shell keeps
// those that match. (Passed as it is, "--" would end the flags and turn
// completion off, and "--x" would be refused as an unknown flag.)
const bashCompletion = `# bash completion for chattyctl; load with: source <(chattyctl completion bash)
_chattyctl_complete() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  if [[ "$cur" == "-"* ]]; then
    opts=$("${words[@]}" - --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -o nospace -F _chattyctl_complete chattyctl
`

const zshCompletion = `#compdef chattyctl
# zsh completion for chattyctl; load with: source <(chattyctl completion zsh)
_chattyctl() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} - --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _chattyctl chattyctl
`

func cmdCompletion(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("completion: want the shell, bash or zsh")
	}
	var script string
	switch c.Args().First() {
	case "bash":
		script = bashCompletion
	case "zsh":
		script = zshCompletion
	default:
		return usagef("completion: unknown shell %q; want bash or zsh", c.Args().First())
	}
	_, err := io.WriteString(c.App.Writer, script)
	if err != nil {
		return fmt.Errorf("write completion script: %w", err)
	}
	return nil
}
