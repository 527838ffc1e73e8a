// Package safeurl shows the URLs Sonde's own HTTP clients call (webhooks,
// checks, glo polls) without what may be a secret: a path and query often
// hold a token (Slack's webhooks do), and events, logs and stats show the
// target to anyone who reads them.
package safeurl

import (
	"errors"
	"net/url"
)

// Redact is u without userinfo, path and query: scheme://host, and "/…"
// when there was a path or query.
func Redact(u *url.URL) string {
	t := u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		t += "/…"
	}
	return t
}

// Cause is err without the *url.Error around it, which names the whole
// URL (net/http's client errors do).
func Cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
