package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// readToken reads a token file for one of Sonde's own clients: its first
// line, without surrounding space. what names the flag or field in errors.
func readToken(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > boundary.MaxTokenLen || strings.ContainsAny(tok, " \t\r") {
		return "", fmt.Errorf("%s %s: want a token of 1 to %d bytes on its first line, without spaces", what, path, boundary.MaxTokenLen)
	}
	return tok, nil
}

// clientTLS is the TLS configuration of Sonde's own clients: the system's
// CAs, plus those in caFile (PEM) when given. Nil when caFile is empty
// (Go's default: the system's CAs).
func clientTLS(what, caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", what, caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
