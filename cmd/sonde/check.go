package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/sonde-metrics/sonde/engine"
)

// subcommand runs `sonde check` or `sonde repair` and returns the exit
// code: check answers 0 for a clean directory, 1 for damage found; repair
// 0 once the directory is rebuilt; both 2 for a usage error and 1 when
// they cannot run.
func subcommand(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sonde "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data", "./data", "data directory (stop the sonde that runs on it first)")
	fs.Usage = func() {
		switch name {
		case "check":
			fmt.Fprintln(stderr, "usage: sonde check [-data DIR]\n\nReads every page and value of snapshot.db and every WAL record, changes nothing,\nand reports the damage. Exit code 0: clean; 1: damage found (or the check could not run).")
		case "repair":
			fmt.Fprintln(stderr, "usage: sonde repair [-data DIR]\n\nRebuilds a damaged data directory from what is intact. The damaged files move,\nuntouched, to DIR/damaged-<time>/; the report lists exactly what was lost.")
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sonde %s: unexpected argument %q\n", name, fs.Arg(0))
		return 2
	}
	if name == "check" {
		rep, err := engine.Check(*dir)
		if err != nil {
			fmt.Fprintf(stderr, "sonde check: %v\n", err)
			return 1
		}
		printReport(stdout, rep)
		if rep.Clean() {
			fmt.Fprintln(stdout, "clean: no damage found")
			return 0
		}
		fmt.Fprintf(stdout, "%d problem(s) found; `sonde repair -data %s` rebuilds the directory from what is intact\n", len(rep.Problems), *dir)
		return 1
	}
	rep, err := engine.Repair(*dir)
	if rep != nil && rep.Backup != "" {
		fmt.Fprintf(stdout, "the damaged files are in %s, untouched\n", rep.Backup)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sonde repair: %v\n", err)
		return 1
	}
	printReport(stdout, rep)
	if len(rep.Lost) == 0 {
		fmt.Fprintln(stdout, "repaired: nothing was lost")
		return 0
	}
	fmt.Fprintf(stdout, "repaired; lost (%d):\n", len(rep.Lost))
	for _, l := range rep.Lost {
		fmt.Fprintf(stdout, "  - %s\n", l)
	}
	return 0
}

func printReport(w io.Writer, rep *engine.Report) {
	fmt.Fprintf(w, "data directory: %s\n", rep.Dir)
	var parts []string
	for b, n := range rep.Entries {
		parts = append(parts, fmt.Sprintf("%s %d", b, n))
	}
	sort.Strings(parts)
	fmt.Fprintf(w, "snapshot.db: covers WAL index %d; entries: %s\n", rep.SnapshotIndex, strings.Join(parts, ", "))
	if pg := rep.Pages; pg.InUse > 0 {
		mb := func(pages int) float64 { return float64(pages) * float64(pg.PageSize) / 1e6 }
		partial := ""
		if pg.Partial {
			partial = " (partial: pages past the damage count as free)"
		}
		fmt.Fprintf(w, "snapshot.db pages: %d of %d bytes (%.1f MB) up to the last in use, %d of them free (%.1f MB)%s\n",
			pg.InUse, pg.PageSize, mb(pg.InUse), pg.Free, mb(pg.Free), partial)
		names := make([]string, 0, len(pg.Buckets))
		for b := range pg.Buckets {
			names = append(names, b)
		}
		sort.Strings(names)
		for _, b := range names {
			u := pg.Buckets[b]
			label := b
			if b == "" {
				label = "(bucket names)"
			}
			fmt.Fprintf(w, "  %-14s %8d pages (%.1f MB), %.0f %% of their bytes written\n",
				label, u.Pages, float64(u.Bytes)/1e6, 100*float64(u.Used)/float64(max(u.Bytes, 1)))
		}
	}
	if rep.Records > 0 {
		fmt.Fprintf(w, "wal: %d records read, %d to %d\n", rep.Records, rep.WALFirst, rep.WALLast)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}
