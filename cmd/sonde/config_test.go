package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sonde.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigEveryFlag: `sonde config` prints every flag; that output,
// read back with -config, gives the same settings, so the file covers
// every flag the set has (a new flag is covered without a change here).
func TestConfigEveryFlag(t *testing.T) {
	var out, errs bytes.Buffer
	if code := configMain([]string{"-max-series", "7", "-check", "a=http://127.0.0.1:9/,every=1m", "-check", "b=http://127.0.0.1:9/"}, &out, &errs); code != 0 {
		t.Fatalf("sonde config: %d %s", code, errs.String())
	}
	var c config
	fs := flagSet(&c)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" {
			n++
			if !strings.Contains(out.String(), "\n"+f.Name+" = ") && !strings.HasPrefix(out.String(), f.Name+" = ") {
				t.Errorf("sonde config leaves out -%s", f.Name)
			}
		}
	})
	if got := strings.Count(out.String(), "\n"); got != n {
		t.Fatalf("%d lines for %d flags:\n%s", got, n, out.String())
	}
	path := writeConfig(t, out.String())
	var again bytes.Buffer
	if code := configMain([]string{"-config", path}, &again, &errs); code != 0 {
		t.Fatalf("sonde config -config: %d %s", code, errs.String())
	}
	if again.String() != out.String() {
		t.Fatalf("read back:\n%s\nwant:\n%s", again.String(), out.String())
	}
	if !strings.Contains(out.String(), "max-series = \"7\"\n") ||
		!strings.Contains(out.String(), `check = ["a=http://127.0.0.1:9/,every=1m", "b=http://127.0.0.1:9/"]`) {
		t.Fatalf("settings not printed as given:\n%s", out.String())
	}
}

// TestConfigSecrets: sonde config leaves out what URLs hold as secrets
// (a password, a token= parameter, a webhook's path) and says so on its
// first line, and what it prints still reads back; -show-secrets prints
// every value as given, a file that runs the same server.
func TestConfigSecrets(t *testing.T) {
	args := []string{
		"-remote-write", "https://u:pw-secret-1@vm.example/api/v1/write?extra_label=site%3Da&api_key=key-secret-2,name=vm",
		"-alert", "name=ops,webhook=https://hooks.slack.com/services/T0/B0/path-secret-3",
		"-upstream", "http://127.0.0.1:1337/events?match=cpu.*&token=token-secret-4", "-upstream-prefix", "up",
		"-check", "web=http://probe:pw-secret-5@127.0.0.1:9/health,every=1m",
		"-glo-poll", "https://127.0.0.1:9/glo?Auth=auth-secret-6,prefix=g",
	}
	var out, errs bytes.Buffer
	if code := configMain(args, &out, &errs); code != 0 {
		t.Fatalf("sonde config: %d %s", code, errs.String())
	}
	text := out.String()
	for i := 1; i <= 6; i++ {
		if strings.Contains(text, fmt.Sprintf("secret-%d", i)) {
			t.Errorf("secret %d printed:\n%s", i, text)
		}
	}
	for _, want := range []string{
		"# secrets in URLs are shown as xxxxx",
		`remote-write = ["https://u:xxxxx@vm.example/api/v1/write?extra_label=site%3Da&api_key=xxxxx,name=vm"]`,
		`alert = ["name=ops,webhook=https://hooks.slack.com/xxxxx"]`,
		`upstream = ["http://127.0.0.1:1337/events?match=cpu.*&token=xxxxx"]`,
		`check = ["web=http://probe:xxxxx@127.0.0.1:9/health,every=1m"]`,
		`glo-poll = ["https://127.0.0.1:9/glo?Auth=xxxxx,prefix=g"]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("sonde config lacks %s:\n%s", want, text)
		}
	}
	if _, err := parseFlags([]string{"-config", writeConfig(t, text)}); err != nil {
		t.Fatalf("the redacted output read back: %v", err)
	}
	var shown bytes.Buffer
	if code := configMain(append([]string{"-show-secrets"}, args...), &shown, &errs); code != 0 {
		t.Fatalf("sonde config -show-secrets: %d %s", code, errs.String())
	}
	if strings.HasPrefix(shown.String(), "#") || strings.Count(shown.String(), "secret-") != 6 {
		t.Fatalf("-show-secrets:\n%s", shown.String())
	}
	var again bytes.Buffer
	if code := configMain([]string{"-show-secrets", "-config", writeConfig(t, shown.String())}, &again, &errs); code != 0 || again.String() != shown.String() {
		t.Fatalf("-show-secrets read back: %d %s\n%s", code, errs.String(), again.String())
	}
	// A file cannot turn it on: it is the command's, not a setting.
	if code := configMain([]string{"-config", writeConfig(t, "show-secrets = true\n")}, io.Discard, &errs); code != 2 ||
		!strings.Contains(errs.String(), "line 1, show-secrets: no such setting") {
		t.Fatalf("show-secrets in a file: %d %s", code, errs.String())
	}
	// -show-secrets is a flag like the others: anywhere, =true, in -h.
	var last bytes.Buffer
	if code := configMain(append(append([]string{}, args...), "-show-secrets=true"), &last, &errs); code != 0 || last.String() != shown.String() {
		t.Fatalf("-show-secrets=true last: %d %s", code, errs.String())
	}
	var help bytes.Buffer
	if configMain([]string{"-h"}, io.Discard, &help); !strings.Contains(help.String(), "-show-secrets") {
		t.Fatalf("sonde config -h leaves out -show-secrets:\n%s", help.String())
	}
	for _, c := range []struct{ flag, in, want string }{
		// -upstream is one URL: a comma in it is not a field's end.
		{"upstream", "http://h:1337/events?match=a,b&token=s1", "http://h:1337/events?match=a,b&token=xxxxx"},
		{"upstream", "HTTP://h/events?token=s2", "http://h/events?token=xxxxx"},
		{"alert", "name=ops,webhook=HTTPS://hooks.slack.com/services/T/B/s3", "name=ops,webhook=https://hooks.slack.com/xxxxx"},
		{"remote-write", "https://s4@vm/api/v1/write,name=vm", "https://xxxxx@vm/api/v1/write,name=vm"},
		{"check", "a=http://h/x?pw=s5&pwd=s6&credential=s7&x=1;token=s8#s9", "a=http://h/x?pw=xxxxx&pwd=xxxxx&credential=xxxxx&x=1;token=xxxxx#xxxxx"},
		// What does not parse as a URL is redacted whole.
		{"check", "w=http://u:p@h/%zz?token=t", "w=http://xxxxx"},
		{"upstream", "http://h:bad?token=s11", "http://xxxxx"},
		{"upstream", "http://u:pa/s12@h/", "http://xxxxx"},
		// The alert parser trims its keys.
		{"alert", "name=ops, webhook=https://hooks.slack.com/services/T/B/s13", "name=ops, webhook=https://hooks.slack.com/xxxxx"},
		// Any flag's URL: one added later is covered.
		{"new-flag", "x=1,https://u:s10@h/", "x=1,https://u:xxxxx@h/"},
	} {
		if got := redactValue(c.flag, c.in); got != c.want {
			t.Errorf("-%s %s: %s, want %s", c.flag, c.in, got, c.want)
		}
	}
}

// TestConfigFile: the file's values apply, in TOML's own types too, the
// command line wins, and a bad file is an error naming its line.
func TestConfigFile(t *testing.T) {
	path := writeConfig(t, "# a comment\nmax-series = 500\nfsync = \"interval\"\nsnapshot-interval = \"5s\"\nlogatron = \"\"\ncheck = [\"a=http://127.0.0.1:9/\"]\n")
	c, err := parseFlags([]string{"-config", path, "-fsync", "never"})
	if err != nil {
		t.Fatal(err)
	}
	if c.maxSeries != 500 || c.fsync != "never" || c.snapshotInterval.String() != "5s" || c.logatronAddr != "" || len(c.checks) != 1 {
		t.Fatalf("config %+v", c)
	}
	// [[remote_write]] tables are -remote-write flags; the command line's win.
	path = writeConfig(t, "external-label = [\"site=a\"]\n[[remote_write]]\nurl = \"http://127.0.0.1:8428/api/v1/write\"\nname = \"vm\"\nshards = 2\n\n[[remote_write]]\nurl = \"https://u:p@example.com/push?a=1,2\"\nmax_samples = 100\n")
	c, err = parseFlags([]string{"-config", path})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.remoteWrites) != 2 || c.remoteWrites[0].Name != "vm" || c.remoteWrites[0].Shards != 2 ||
		c.remoteWrites[1].Name != "example.com" || c.remoteWrites[1].MaxSamples != 100 || c.remoteWrites[1].URL != "https://u:p@example.com/push?a=1%2C2" ||
		len(c.remoteWrites[0].ExternalLabels) != 1 {
		t.Fatalf("remote_write %+v", c.remoteWrites)
	}
	c, err = parseFlags([]string{"-config", path, "-remote-write", "http://127.0.0.1:9090/api/v1/write"})
	if err != nil || len(c.remoteWrites) != 1 || c.remoteWrites[0].Name != "127.0.0.1_9090" {
		t.Fatalf("command line: %v %+v", err, c.remoteWrites)
	}
	for text, want := range map[string]string{
		"max-series = 5\nmax-seris = 6\n":            "line 2, max-seris: no such setting",
		"max-series = 5\n\nfsync = [\"a\", \"b\"]\n": "line 3, fsync: a list for a flag that takes one value",
		"max-series = \"many\"\n":                    "line 1, max-series: parse error",
		"a = 1\nb = [1,\n":                           "line 2",
		"config = \"x\"\n":                           "line 1, config: no such setting",
		"[remote_write]\nurl = \"x\"\n":              "line 1, remote_write: want [[remote_write]] tables",
		"max-series = 5\n[[remote_write]]\nurl = \"http://a:1/w\"\nshard = 2\n": "line 2, remote_write: table 1: unknown key shard",
		"[[remote_write]]\nname = \"a\"\n":                                      "line 1, remote_write: table 1: want url",
		"[[remote_write]]\nurl = \"ftp://a/\"\n":                                "-remote-write a: the URL must be http",
		"gogc = 50\n[[gogc-floor]]\n":                                           "line 2, gogc-floor: a table or a date",
	} {
		_, err := parseFlags([]string{"-config", writeConfig(t, text)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", text, err, want)
		}
	}
}
