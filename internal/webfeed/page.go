package webfeed

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
)

// pageHTML is the web page: plain HTML, CSS and a small script, with no
// request but to its own listener.
//
//go:embed page/index.html
var pageHTML []byte

// pageCSP allows the page's own inline style and script, by their hashes,
// and connections to its own origin only.
var pageCSP = "default-src 'none'; " +
	"style-src " + inlineHash(pageHTML, "<style>", "</style>") + "; " +
	"script-src " + inlineHash(pageHTML, "<script>", "</script>") + "; " +
	"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHash returns the CSP source of the hash of what page holds
// between open and close.
func inlineHash(page []byte, open, close string) string {
	_, rest, ok := bytes.Cut(page, []byte(open))
	body, _, ok2 := bytes.Cut(rest, []byte(close))
	if !ok || !ok2 {
		panic("webfeed: the page has no " + open)
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}
