package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// loadConfig applies the settings of the TOML file at path to fs: each
// key names a flag, each value is its value (a string, number or bool,
// or a list of them for a repeatable flag). A flag given on the command
// line keeps its value. A key that names no flag, a value of another
// shape, or a value the flag refuses is an error naming the file, the
// line and the key. BurntSushi/toml: the TOML 1.0 parser the Go
// ecosystem relies on most, with line numbers in its errors.
func loadConfig(fs *flag.FlagSet, path string) error {
	text, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read -config: %w", err)
	}
	var settings map[string]any
	if _, err := toml.Decode(string(text), &settings); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("-config %s, line %d: %s", path, pe.Position.Line, pe.Message)
		}
		return fmt.Errorf("-config %s: %w", path, err)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		where := func() string { return fmt.Sprintf("-config %s, line %d, %s", path, keyLine(text, k), k) }
		if k == "remote_write" {
			if explicit(fs, "remote-write") {
				continue // the command line wins
			}
			specs, err := remoteWriteTables(settings[k])
			if err != nil {
				return fmt.Errorf("%s: %w", where(), err)
			}
			for _, spec := range specs {
				if err := fs.Set("remote-write", spec); err != nil {
					return fmt.Errorf("%s: %w", where(), err)
				}
			}
			continue
		}
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == showSecretsFlag { // sonde config's own: given, not found in a file
			return fmt.Errorf("%s: no such setting (the keys are the flags' names: sonde -help)", where())
		}
		if explicit(fs, k) {
			continue // the command line wins
		}
		values, err := configValues(settings[k])
		if err != nil {
			return fmt.Errorf("%s: %w", where(), err)
		}
		if len(values) != 1 && !isList(f) {
			return fmt.Errorf("%s: a list for a flag that takes one value", where())
		}
		for _, v := range values {
			if err := fs.Set(k, v); err != nil {
				return fmt.Errorf("%s: %w", where(), err)
			}
		}
	}
	return nil
}

// configValues turns a TOML value into the flag's text: one for a
// scalar, one per element for a list.
func configValues(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'f', -1, 64)}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, err := configValues(e)
			if err != nil || len(s) != 1 {
				return nil, errors.New("a list holds strings, numbers or bools only")
			}
			out = append(out, s[0])
		}
		return out, nil
	}
	return nil, errors.New("a table or a date: want a string, number, bool or a list of them")
}

// remoteWriteTables turns [[remote_write]] tables (url, and the fields of
// -remote-write: name, shards, max-samples, timeout, bearer-token-file)
// into -remote-write values.
func remoteWriteTables(v any) ([]string, error) {
	tables, ok := v.([]map[string]any)
	if !ok {
		return nil, errors.New("want [[remote_write]] tables (url = ..., name = ..., shards = ...)")
	}
	var out []string
	for i, t := range tables {
		u, ok := t["url"].(string)
		if !ok || u == "" {
			return nil, fmt.Errorf("table %d: want url = \"http://...\"", i+1)
		}
		spec := strings.ReplaceAll(u, ",", "%2C")
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "url" {
				continue
			}
			field := strings.ReplaceAll(k, "_", "-")
			switch field {
			case "name", "shards", "max-samples", "timeout", "bearer-token-file":
			default:
				return nil, fmt.Errorf("table %d: unknown key %s (url, name, shards, max-samples, timeout, bearer-token-file)", i+1, k)
			}
			vals, err := configValues(t[k])
			if err != nil || len(vals) != 1 || strings.Contains(vals[0], ",") {
				return nil, fmt.Errorf("table %d, %s: want one value without a comma", i+1, k)
			}
			spec += "," + field + "=" + vals[0]
		}
		out = append(out, spec)
	}
	return out, nil
}

// isList reports whether f is a repeatable flag.
func isList(f *flag.Flag) bool {
	_, ok := f.Value.(*stringList)
	return ok
}

// keyLine is the line of text where key is set, or its table begins (0
// when it is not found as a bare or quoted key at the start of a line).
func keyLine(text []byte, key string) int {
	k := regexp.QuoteMeta(key)
	re := regexp.MustCompile(`(?m)^[ \t]*(?:(?:` + k + `|"` + k + `")[ \t]*=|\[\[?[ \t]*"?` + k + `"?[ \t]*\])`)
	loc := re.FindIndex(text)
	if loc == nil {
		return 0
	}
	return 1 + strings.Count(string(text[:loc[0]]), "\n")
}

// printConfig writes the effective settings as a TOML file -config reads:
// every flag but -config (and sonde config's own), by name, as a string
// (a list for a repeatable flag). Unless showSecrets, the secrets URLs
// may hold are replaced by redacted (see redactValue), and a first
// comment line says so.
func printConfig(w io.Writer, fs *flag.FlagSet, showSecrets bool) {
	var b strings.Builder
	hidden := false
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == showSecretsFlag {
			return
		}
		show := func(v string) string {
			if !showSecrets {
				r := redactValue(f.Name, v)
				hidden = hidden || r != v
				v = r
			}
			return strconv.Quote(v)
		}
		if l, ok := f.Value.(*stringList); ok {
			quoted := make([]string, len(*l))
			for i, v := range *l {
				quoted[i] = show(v)
			}
			fmt.Fprintf(&b, "%s = [%s]\n", f.Name, strings.Join(quoted, ", "))
			return
		}
		fmt.Fprintf(&b, "%s = %s\n", f.Name, show(f.Value.String()))
	})
	if hidden {
		fmt.Fprintf(w, "# secrets in URLs are shown as %s: `sonde config -show-secrets` prints them\n", redacted)
	}
	io.WriteString(w, b.String())
}

// showSecretsFlag is sonde config's own flag.
const showSecretsFlag = "show-secrets"

// redacted stands for a secret sonde config leaves out.
const redacted = "xxxxx"

// redactValue is the value of the flag named name with the secrets of
// the URLs in it replaced by redacted. -upstream is a URL whole. The
// other flags that hold URLs are fields split by commas, as their
// parsers split them (a URL is cut at its first comma there too): a
// field is a URL, or NAME=URL (-check, -alert's webhook=). In a URL the
// secrets are its userinfo (a password, or a user alone, which is often
// a token), the value of a query parameter whose name says secret
// (token, key, pass, pw, secret, sig, auth, cred), its fragment, and the
// whole path of a webhook (Slack's, Discord's and Teams' hold their
// secret there).
func redactValue(name, v string) string {
	if name == "upstream" {
		if isURL(v) {
			return redactURL(v, false)
		}
		return v
	}
	fields := strings.Split(v, ",")
	for i, f := range fields {
		key, u, ok := strings.Cut(f, "=")
		if isURL(f) {
			key, u, ok = "", f, true
		}
		if !ok || !isURL(u) {
			continue
		}
		u = redactURL(u, strings.TrimSpace(key) == "webhook") // the alert parser trims keys
		if key != "" {
			u = key + "=" + u
		}
		fields[i] = u
	}
	return strings.Join(fields, ",")
}

// isURL reports whether s begins with an HTTP scheme, in any case (Go's
// URL parser and HTTP client take HTTPS:// as https://).
func isURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	return ok && (strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https"))
}

// secretParam matches the query parameter names whose values are
// secrets; it errs on the side of hiding.
var secretParam = regexp.MustCompile(`(?i)token|key|pass|pw|secret|sig|auth|cred`)

// queryParam matches one parameter of a raw query.
var queryParam = regexp.MustCompile(`[^&;]+`)

// redactURL is raw with its secrets redacted; a URL that does not parse
// is redacted whole after its scheme, since where its secret lies is
// unknown (the server refuses it at start, and such a value is what gets
// pasted into a ticket).
func redactURL(raw string, wholePath bool) string {
	u, err := url.Parse(raw)
	if err != nil {
		scheme, _, _ := strings.Cut(raw, "://")
		return scheme + "://" + redacted
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		} else {
			u.User = url.User(redacted)
		}
	}
	if wholePath && u.Path != "" && u.Path != "/" {
		u.Path, u.RawPath = "/"+redacted, ""
	}
	// Parameters split at & and ; both: some servers take either.
	u.RawQuery = queryParam.ReplaceAllStringFunc(u.RawQuery, func(kv string) string {
		k, _, _ := strings.Cut(kv, "=")
		if name, err := url.QueryUnescape(k); err != nil || secretParam.MatchString(name) {
			return k + "=" + redacted
		}
		return kv
	})
	if u.Fragment != "" {
		u.Fragment, u.RawFragment = redacted, ""
	}
	return u.String()
}

// configMain runs `sonde config [-show-secrets] [flags]`: the effective
// settings of a server started with those flags, secrets redacted unless
// -show-secrets.
func configMain(args []string, stdout, stderr io.Writer) int {
	var showSecrets bool
	_, fs, err := parse(args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&showSecrets, showSecretsFlag, false, "sonde config only: print the secrets URLs hold as given (otherwise "+redacted+")")
	})
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sonde config:", err)
		return 2
	}
	printConfig(stdout, fs, showSecrets)
	return 0
}
