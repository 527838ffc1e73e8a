// Package alert delivers the alerts the store decides (a heartbeat gone
// late, and back) to the channels the operator configured: a webhook, an
// email over SMTP, or Pushover. Channels are set by flags (-alert), never
// by whoever posts a heartbeat: a client-chosen URL or address would make
// Sonde an open relay and a request forger. Secrets (an SMTP password, a
// Pushover token) come from a file or the environment, never from a flag
// that ps shows.
//
// Delivery is at least once: an alert stays in the store's queue until a
// channel took it (Deliverer), through restarts, and each attempt's
// outcome is an event. Every message carries the alert's id, the same
// through every retry, so a receiver can drop a resend.
package alert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/safeurl"
)

// Channel is one configured alert channel.
type Channel struct {
	Name string
	// Kind is webhook, email or pushover; Target says where (no secret).
	Kind, Target string
	send         func(ctx context.Context, a *sample.Alert) error
	client       *http.Client
}

// Send delivers a through the channel.
func (c *Channel) Send(ctx context.Context, a *sample.Alert) error { return c.send(ctx, a) }

// Secrets are read through these (tests replace them).
type Secrets struct {
	Getenv   func(string) string
	ReadFile func(string) ([]byte, error)
}

// DefaultPushover is Pushover's message API.
const DefaultPushover = "https://api.pushover.net/1/messages.json"

// ParseChannel reads one -alert flag: comma-separated key=value pairs.
//
//	name=ops,webhook=https://hooks.example.com/sonde
//	name=mail,email=ops@example.com;oncall@example.com,smtp=mail.example.com:587,
//	    from=sonde@example.com,user=sonde,password-file=/etc/sonde/smtp-password
//	name=phone,pushover=USERKEY,token-env=PUSHOVER_TOKEN
//
// Email takes starttls=required (the default: refuse a server without
// STARTTLS) or starttls=optional, and ca-file= for a private CA; Pushover
// takes url= (its API, for a proxy or a test). Every channel takes
// timeout= (default 10s). A value may not hold a comma.
func ParseChannel(spec string, sec Secrets) (*Channel, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("-alert %q: %q is not key=value", clip(spec), clip(part))
		}
		if _, dup := kv[k]; dup {
			return nil, fmt.Errorf("-alert %q: %s given twice", clip(spec), k)
		}
		kv[k] = v
	}
	take := func(k string) string { v := kv[k]; delete(kv, k); return v }
	c := &Channel{Name: take("name")}
	if !validName(c.Name) {
		return nil, fmt.Errorf("-alert %q: name=%q: want 1 to 64 letters, digits, '.', '_' or '-'", clip(spec), clip(c.Name))
	}
	for _, k := range []string{"password", "token", "pass", "secret"} {
		if _, ok := kv[k]; ok {
			return nil, fmt.Errorf("-alert %s: %s= is refused: a flag shows in ps; use %s-file= or %s-env=", c.Name, k, k, k)
		}
	}
	timeout := 10 * time.Second
	if v := take("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 5*time.Minute {
			return nil, fmt.Errorf("-alert %s: timeout=%q: want a duration up to 5m", c.Name, clip(v))
		}
		timeout = d
	}
	// No redirects: a webhook answers where it was told to.
	c.client = &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var err error
	switch {
	case kv["webhook"] != "":
		err = c.webhook(take("webhook"))
	case kv["email"] != "":
		err = c.email(take, sec, timeout)
	case kv["pushover"] != "":
		err = c.pushover(take, sec)
	default:
		return nil, fmt.Errorf("-alert %s: want webhook=, email= or pushover=", c.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("-alert %s: %w", c.Name, err)
	}
	for k := range kv {
		return nil, fmt.Errorf("-alert %s: %s= is not a setting of a %s channel", c.Name, k, c.Kind)
	}
	return c, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// secret reads the secret key-file= or key-env= names; "" when neither
// is given.
func secret(take func(string) string, sec Secrets, key string) (string, error) {
	file, env := take(key+"-file"), take(key+"-env")
	switch {
	case file != "" && env != "":
		return "", fmt.Errorf("%s-file= and %s-env= both given", key, key)
	case file != "":
		b, err := sec.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read %s-file: %w", key, err)
		}
		return strings.TrimSpace(string(b)), nil
	case env != "":
		v := sec.Getenv(env)
		if v == "" {
			return "", fmt.Errorf("%s-env=%s: the environment variable is empty or unset", key, env)
		}
		return v, nil
	}
	return "", nil
}

// payload is what a webhook receives.
type payload struct {
	ID      uint64 `json:"id"`
	Time    int64  `json:"time"`
	Service string `json:"service"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Channel string `json:"channel"`
}

func (c *Channel) webhook(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook=%q: want an http or https URL", clip(raw))
	}
	c.Kind, c.Target = "webhook", safeurl.Redact(u)
	c.send = func(ctx context.Context, a *sample.Alert) error {
		body, err := json.Marshal(payload{ID: a.ID, Time: a.Time, Service: a.Service, Kind: a.Kind.String(), Message: a.Message, Channel: a.Channel})
		if err != nil {
			return fmt.Errorf("encode alert: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("build webhook request: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "sonde")
		req.Header.Set("X-Sonde-Alert-ID", fmt.Sprint(a.ID))
		return c.do(req)
	}
	return nil
}

// do sends req and wants a 2xx. Its errors name the redacted target,
// never the URL (net/http puts the whole URL in its errors).
func (c *Channel) do(req *http.Request) error {
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", c.Target, safeurl.Cause(err))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s: %s", c.Target, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

func (c *Channel) pushover(take func(string) string, sec Secrets) error {
	user := take("pushover")
	token, err := secret(take, sec, "token")
	if err != nil {
		return err
	}
	if token == "" {
		return fmt.Errorf("pushover needs token-file= or token-env=")
	}
	api := take("url")
	if api == "" {
		api = DefaultPushover
	}
	if u, err := url.Parse(api); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url=%q: want an http or https URL", clip(api))
	}
	c.Kind, c.Target = "pushover", api
	if u, _ := url.Parse(api); u.User != nil || u.RawQuery != "" {
		c.Target = safeurl.Redact(u)
	}
	c.send = func(ctx context.Context, a *sample.Alert) error {
		form := url.Values{"token": {token}, "user": {user}, "title": {"sonde: " + a.Service + " " + a.Kind.String()},
			"message": {fmt.Sprintf("%s (alert %d)", a.Message, a.ID)}, "timestamp": {fmt.Sprint(a.Time / 1000)}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, api, strings.NewReader(form.Encode()))
		if err != nil {
			return fmt.Errorf("build pushover request: %w", err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("User-Agent", "sonde")
		return c.do(req)
	}
	return nil
}

func (c *Channel) email(take func(string) string, sec Secrets, timeout time.Duration) error {
	var to []string
	for _, a := range strings.Split(take("email"), ";") {
		if a = strings.TrimSpace(a); a != "" {
			if !plainAddress(a) {
				return fmt.Errorf("email=%q: want addresses like ops@example.com, separated by ';'", clip(a))
			}
			to = append(to, a)
		}
	}
	server, from, user := take("smtp"), take("from"), take("user")
	host, _, err := net.SplitHostPort(server)
	if err != nil || host == "" {
		return fmt.Errorf("smtp=%q: want host:port", clip(server))
	}
	if !plainAddress(from) {
		return fmt.Errorf("from=%q: want an address like sonde@example.com", clip(from))
	}
	pass, err := secret(take, sec, "password")
	if err != nil {
		return err
	}
	if user != "" && pass == "" {
		return fmt.Errorf("user= needs password-file= or password-env=")
	}
	required := true
	switch v := take("starttls"); v {
	case "", "required":
	case "optional":
		required = false
	default:
		return fmt.Errorf("starttls=%q: want required or optional", clip(v))
	}
	tlsConf := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if f := take("ca-file"); f != "" {
		pem, err := sec.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read ca-file: %w", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca-file %s holds no PEM certificate", f)
		}
	}
	c.Kind, c.Target = "email", strings.Join(to, ";")+" via "+server
	c.send = func(ctx context.Context, a *sample.Alert) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", server)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", server, err)
		}
		defer conn.Close()
		if d, ok := ctx.Deadline(); ok {
			conn.SetDeadline(d)
		}
		cl, err := smtp.NewClient(conn, host)
		if err != nil {
			return fmt.Errorf("smtp greeting from %s: %w", server, err)
		}
		defer cl.Close()
		if ok, _ := cl.Extension("STARTTLS"); ok {
			if err := cl.StartTLS(tlsConf); err != nil {
				return fmt.Errorf("smtp starttls with %s: %w", server, err)
			}
		} else if required {
			return fmt.Errorf("%s offers no STARTTLS (starttls=optional allows that)", server)
		}
		if user != "" {
			if err := cl.Auth(smtp.PlainAuth("", user, pass, host)); err != nil {
				return fmt.Errorf("smtp auth with %s: %w", server, err)
			}
		}
		if err := cl.Mail(from); err != nil {
			return fmt.Errorf("smtp MAIL FROM: %w", err)
		}
		for _, r := range to {
			if err := cl.Rcpt(r); err != nil {
				return fmt.Errorf("smtp RCPT TO %s: %w", r, err)
			}
		}
		w, err := cl.Data()
		if err != nil {
			return fmt.Errorf("smtp DATA: %w", err)
		}
		if _, err := w.Write(message(from, to, host, a)); err != nil {
			return fmt.Errorf("smtp message: %w", err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("smtp end of message: %w", err)
		}
		return cl.Quit()
	}
	return nil
}

// plainAddress accepts local@domain with no spaces, angle brackets or
// line ends: what goes into headers as it is.
func plainAddress(a string) bool {
	at := strings.IndexByte(a, '@')
	return at > 0 && at < len(a)-1 && !strings.ContainsAny(a, " \t\r\n<>,;\"")
}

// message is the alert as an email. Its Message-ID is the alert's id, the
// same in every resend.
func message(from string, to []string, host string, a *sample.Alert) []byte {
	oneLine := strings.NewReplacer("\r", " ", "\n", " ").Replace
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: [sonde] %s\r\n", oneLine(a.Message))
	fmt.Fprintf(&b, "Date: %s\r\n", time.UnixMilli(a.Time).UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <sonde-alert-%d@%s>\r\n", a.ID, host)
	fmt.Fprintf(&b, "X-Sonde-Alert-ID: %d\r\n", a.ID)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "%s\r\n\r\nservice: %s\r\nkind: %s\r\nalert id: %d\r\ndecided at: %s\r\n", a.Message, oneLine(a.Service),
		a.Kind, a.ID, time.UnixMilli(a.Time).UTC().Format(time.RFC3339))
	return b.Bytes()
}

// FromEnvironment reads secrets from the process's environment and files.
var FromEnvironment = Secrets{Getenv: os.Getenv, ReadFile: os.ReadFile}
