package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string // its certificate's file
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sonde test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pem: filepath.Join(dir, "ca.pem")}
	writePEM(t, ca.pem, "CERTIFICATE", der)
	return ca
}

// issue writes a server certificate for 127.0.0.1 with serial, and its
// key, to cert and key.
func (ca *testCA) issue(t *testing.T, serial int64, cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, key, "EC PRIVATE KEY", kder)
	writePEM(t, cert, "CERTIFICATE", der)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// tlsSerial connects to addr with TLS, trusting only ca, and returns the
// serial of the certificate the server showed, and the connection.
func tlsSerial(t *testing.T, ca *testCA, addr string) (int64, *tls.Conn) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), c
}

// TestTLS: with -tls-cert and -tls-key the HTTP API answers curl
// --cacert over HTTPS and the command protocol speaks TLS; plain text to
// them gets nothing; SIGHUP reads a new certificate for new connections,
// and a broken one leaves the old in use.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.issue(t, 100, cert, key)
	p := start(t, t.TempDir(), "-tls-cert", cert, "-tls-key", key)

	serial, c := tlsSerial(t, ca, p.tcpAddr)
	if serial != 100 {
		t.Fatalf("serial %d", serial)
	}
	fmt.Fprintf(c, "SET tls.key 42\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("SET over TLS: %q %v", line, err)
	}
	c.Close()
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", ca.pem, "https://"+p.httpAddr+"/data").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"tls.key":42`) {
		t.Fatalf("curl --cacert: %v %s", err, out)
	}
	// Without the CA, curl refuses the certificate.
	if out, err := exec.Command("curl", "-sS", "--max-time", "10", "https://"+p.httpAddr+"/data").CombinedOutput(); err == nil {
		t.Fatalf("curl trusted a certificate of an unknown CA: %s", out)
	}
	// Plain text gets no HTTP answer.
	out, _ = exec.Command("curl", "-sS", "--max-time", "10", "http://"+p.httpAddr+"/data").CombinedOutput()
	if strings.Contains(string(out), "tls.key") {
		t.Fatalf("plain HTTP was served: %s", out)
	}
	// Graphite stays plain unless -tls-listeners names it.
	g, err := net.Dial("tcp", p.graphiteAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(g, "tls.plain 7 %d\n", time.Now().Unix())
	g.Close()
	waitFor(t, "the plain Graphite line", func() bool {
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", ca.pem, "https://"+p.httpAddr+"/data").CombinedOutput()
		return err == nil && strings.Contains(string(out), `"tls.plain":7`)
	})

	// SIGHUP: a new certificate for new connections.
	ca.issue(t, 200, cert, key)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the new certificate", func() bool {
		s, c := tlsSerial(t, ca, p.httpAddr)
		c.Close()
		return s == 200
	})
	// A broken file: the certificate in use stays, and the log says so.
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the failed reload logged", func() bool { return strings.Contains(p.logText(), "TLS certificate not reloaded") })
	if s, c := tlsSerial(t, ca, p.tcpAddr); s != 200 {
		t.Fatalf("after a broken reload the serial is %d", s)
	} else {
		c.Close()
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	// A certificate without its key is refused at the start.
	out, err = exec.Command(binary, "-data", t.TempDir(), "-tls-cert", cert).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-tls-cert and -tls-key go together") {
		t.Fatalf("-tls-cert alone: %v %s", err, out)
	}
}
