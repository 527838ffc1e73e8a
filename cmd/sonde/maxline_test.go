package main

import (
	"slices"
	"strings"
	"testing"
)

// TestMaxLineEnds: a line of exactly -max-line bytes is taken with LF and
// with CRLF, one byte more is refused with both, and an overlong last line
// without a newline gets its answer too (it used to get none).
func TestMaxLineEnds(t *testing.T) {
	p := start(t, t.TempDir(), "-max-line", "64")
	fit := "SET k " + strings.Repeat("1", 58) // 64 bytes
	over := fit + "2"
	const refused = "-ERR line is longer than 64 bytes"
	for _, c := range []struct {
		payload string
		want    []string
	}{
		{fit + "\n" + fit + "\r\n" + over + "\n" + over + "\r\n", []string{"+OK", "+OK", refused, refused}},
		{"PING\n" + fit, []string{"+PONG", "+OK"}},
		{"PING\n" + over, []string{"+PONG", refused}},
		{over, []string{refused}},
		{"PING\n" + strings.Repeat("x", 100_000), []string{"+PONG", refused}}, // longer than the read buffer
	} {
		if got := exchange(t, p.tcpAddr, c.payload); !slices.Equal(got, c.want) {
			t.Errorf("send %.80q: replies %q, want %q", c.payload, got, c.want)
		}
	}
	if c := p.counters("tcp"); c.Commands != 3 || c.BadLines != 5 {
		t.Errorf("tcp stats %+v, want 3 commands and 5 bad lines", c)
	}
}

// TestMaxLineEndsGraphite: the same limits on the Graphite listener, which
// answers nothing but counts.
func TestMaxLineEndsGraphite(t *testing.T) {
	p := start(t, t.TempDir(), "-max-line", "64")
	fit := func(k string) string { return "g." + k + strings.Repeat("x", 59) + " 1" } // 64 bytes
	over := func(k string) string { return "g." + k + strings.Repeat("x", 60) + " 1" }
	got := exchange(t, p.graphiteAddr, fit("a")+"\n"+fit("b")+"\r\n"+over("c")+"\n"+over("d")+"\r\n"+over("e"))
	if len(got) != 0 {
		t.Errorf("graphite answered %q", got)
	}
	if c := p.counters("graphite"); c.Commands != 2 || c.BadLines != 3 {
		t.Errorf("graphite stats %+v, want 2 commands and 3 bad lines", c)
	}
	if k := p.keys(); !slices.Equal(k, []string{"g.a" + strings.Repeat("x", 59), "g.b" + strings.Repeat("x", 59)}) {
		t.Errorf("/data holds %q, want the two lines of 64 bytes", k)
	}
}
