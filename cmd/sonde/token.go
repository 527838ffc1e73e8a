package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// tokenMain runs `sonde token`: it makes a random token and prints the
// -auth-file line that grants it, which holds only the token's SHA-256.
// With -out the token goes to that file (mode 0600, not overwritten) and
// only the line is printed; else the token is printed first.
func tokenMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sonde token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the token's name in the -auth-file (who holds it), 1 to 64 of A-Z a-z 0-9 _ . -")
	scope := fs.String("scope", "read", "read, write or read,write")
	out := fs.String("out", "", "write the token to this new file (mode 0600) for a client's -token-file, and print only the -auth-file line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "sonde token:", err)
		return 2
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if _, err := boundary.ParseScope(*scope); err != nil {
		return fail(err)
	}
	token, hashed := boundary.NewToken()
	line := *name + " " + *scope + " " + hashed
	if _, err := boundary.ParseTokens(line); err != nil {
		return fail(fmt.Errorf("-name %q: want 1 to 64 of A-Z a-z 0-9 _ . -", *name))
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fail(fmt.Errorf("create -out: %w", err))
		}
		_, err = fmt.Fprintln(f, token)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(fmt.Errorf("write -out: %w", err))
		}
	} else {
		fmt.Fprintln(stdout, token)
	}
	fmt.Fprintln(stdout, line)
	return 0
}
