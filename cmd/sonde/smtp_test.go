package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// mailIn is one message a test SMTP server took.
type mailIn struct {
	tls        bool
	user, pass string
	from       string
	to         []string
	msg        *mail.Message
	body       string
}

// smtpServer is a real SMTP server (github.com/emersion/go-smtp) on a
// local socket, with AUTH PLAIN; with TLS it offers STARTTLS with a
// certificate of its own (caFile holds it for the client).
type smtpServer struct {
	addr   string
	caFile string
	mails  chan mailIn
}

func newSMTPServer(t *testing.T, withTLS bool) *smtpServer {
	t.Helper()
	s := &smtpServer{mails: make(chan mailIn, 16)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{conn: c, out: s.mails}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	if withTLS {
		cert, caPEM := selfSigned(t)
		s.caFile = filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(s.caFile, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	} else {
		srv.AllowInsecureAuth = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *smtpServer) next(t *testing.T) mailIn {
	t.Helper()
	select {
	case m := <-s.mails:
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no mail within 30 s")
		return mailIn{}
	}
}

type smtpSession struct {
	conn *smtp.Conn
	out  chan mailIn
	m    mailIn
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != "sonde" || pass != "s3cret pass" {
			return errors.New("bad credentials")
		}
		s.m.user, s.m.pass = user, pass
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	_, s.m.tls = s.conn.TLSConnectionState()
	s.m.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.m.to = append(s.m.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(msg.Body)
	if err != nil {
		return err
	}
	s.m.msg, s.m.body = msg, string(b)
	s.out <- s.m
	return nil
}

func (s *smtpSession) Reset()        { s.m = mailIn{user: s.m.user, pass: s.m.pass} }
func (s *smtpSession) Logout() error { return nil }

// selfSigned makes a certificate for 127.0.0.1, its own CA.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sonde test smtp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestHeartbeatEmail: a late heartbeat whose channel is email sends one
// message through a real SMTP server, over STARTTLS, with AUTH PLAIN and
// the password from a file; its headers carry the alert's id. A server
// without STARTTLS is refused unless starttls=optional says otherwise.
func TestHeartbeatEmail(t *testing.T) {
	srv := newSMTPServer(t, true)
	pw := filepath.Join(t.TempDir(), "smtp-password")
	if err := os.WriteFile(pw, []byte("s3cret pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, t.TempDir(), "-alert", "name=mail,email=ops@example.com;oncall@example.com,smtp="+srv.addr+
		",from=sonde@example.com,user=sonde,password-file="+pw+",ca-file="+srv.caFile)
	if strings.Contains(strings.Join(p.cmd.Args, " "), "s3cret") {
		t.Fatal("the password is on the command line")
	}
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"db","nextIn":1,"alert":"mail"}`); code != 200 {
		t.Fatalf("pulse: %d %s", code, body)
	}
	m := srv.next(t)
	if !m.tls || m.user != "sonde" || m.pass != "s3cret pass" {
		t.Fatalf("session: tls %v, auth %q/%q", m.tls, m.user, m.pass)
	}
	if m.from != "sonde@example.com" || strings.Join(m.to, ",") != "ops@example.com,oncall@example.com" {
		t.Fatalf("envelope: from %q to %q", m.from, m.to)
	}
	h := m.msg.Header
	id := h.Get("X-Sonde-Alert-ID")
	if h.Get("Subject") != "[sonde] Service db has not pulsed" || h.Get("From") != "sonde@example.com" ||
		h.Get("To") != "ops@example.com, oncall@example.com" || h.Get("Message-ID") != "<sonde-alert-"+id+"@127.0.0.1>" || id == "" {
		t.Fatalf("headers: %v", h)
	}
	if _, err := h.Date(); err != nil {
		t.Fatalf("Date header: %v", err)
	}
	for _, want := range []string{"Service db has not pulsed", "service: db", "kind: late", "alert id: " + id} {
		if !strings.Contains(m.body, want) {
			t.Fatalf("body %q lacks %q", m.body, want)
		}
	}
	waitFor(t, "the email alert done", func() bool { return len(p.alerts()) == 0 })
	p.stop()

	// The same server without STARTTLS (plain SMTP on another port) is
	// refused: the password never goes out in the clear.
	plain := newSMTPServer(t, false)
	p = start(t, t.TempDir(), "-alert", "name=mail,email=ops@example.com,smtp="+plain.addr+
		",from=sonde@example.com,user=sonde,password-file="+pw)
	if code, body := p.send("POST", "/api/v1/heartbeats", `{"service":"db","nextIn":1,"alert":"mail"}`); code != 200 {
		t.Fatalf("pulse: %d %s", code, body)
	}
	waitFor(t, "a failed attempt event", func() bool {
		for _, ev := range p.listEvents("message=" + url.QueryEscape("offers no STARTTLS")) {
			if ev.Level == 2 {
				return true
			}
		}
		return false
	})
	select {
	case m := <-plain.mails:
		t.Fatalf("a mail went to a server without STARTTLS: %+v", m)
	default:
	}
	if n := len(p.alerts()); n != 1 {
		t.Fatalf("%d alerts queued, want the one not delivered", n)
	}
}
