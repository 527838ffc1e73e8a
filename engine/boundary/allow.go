package boundary

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Allow is a source allowlist (-allow CIDR): the addresses every
// listener takes connections and datagrams from. A nil *Allow takes
// every source. It counts what it refused, by listener.
type Allow struct {
	prefixes []netip.Prefix
	mu       sync.Mutex
	refused  map[string]*atomic.Int64
}

// ParseAllow reads CIDRs ("10.0.0.0/8") or single addresses ("10.1.2.3",
// "::1"). An empty list is no allowlist: nil.
func ParseAllow(specs []string) (*Allow, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	a := &Allow{refused: map[string]*atomic.Int64{}}
	for _, s := range specs {
		for _, f := range strings.Split(s, ",") {
			f = strings.TrimSpace(f)
			p, err := netip.ParsePrefix(f)
			if err != nil {
				addr, aerr := netip.ParseAddr(f)
				if aerr != nil {
					return nil, fmt.Errorf("-allow %q: want a CIDR (10.0.0.0/8) or an address", f)
				}
				p = netip.PrefixFrom(addr, addr.BitLen())
			}
			a.prefixes = append(a.prefixes, p.Masked())
		}
	}
	return a, nil
}

// Allowed reports whether a source may connect. An IPv4 address written
// as IPv6 (::ffff:10.1.2.3) is taken as IPv4.
func (a *Allow) Allowed(addr net.Addr) bool {
	if a == nil {
		return true
	}
	var ip netip.Addr
	switch v := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return false
		}
		ip = ap.Addr()
	}
	return a.AllowedIP(ip)
}

// AllowedIP reports whether a source address may send.
func (a *Allow) AllowedIP(ip netip.Addr) bool {
	if a == nil {
		return true
	}
	ip = ip.Unmap()
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Refuse counts a source refused by the listener named name.
func (a *Allow) Refuse(name string) {
	a.mu.Lock()
	c := a.refused[name]
	if c == nil {
		c = new(atomic.Int64)
		a.refused[name] = c
	}
	a.mu.Unlock()
	c.Add(1)
}

// Refused returns the sources refused so far, by listener.
func (a *Allow) Refused() map[string]int64 {
	out := map[string]int64{}
	if a == nil {
		return out
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.refused {
		out[k] = v.Load()
	}
	return out
}

// String lists the allowlist, for logs.
func (a *Allow) String() string {
	if a == nil {
		return "any"
	}
	s := make([]string, len(a.prefixes))
	for i, p := range a.prefixes {
		s[i] = p.String()
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// Listen listens on addr (TCP) for the listener named name. With an
// allowlist, Accept closes a connection from a source it refuses at once,
// without a byte, and counts it; with TLS for name, the connections it
// returns are TLS servers (the handshake runs at their first read or
// write, in the connection's own goroutine).
func Listen(acc *Access, name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || acc == nil {
		return ln, err
	}
	if acc.Allow != nil {
		ln = &allowListener{Listener: ln, a: acc.Allow, name: name}
	}
	if acc.TLSFor(name) {
		ln = tls.NewListener(ln, acc.TLS.Config())
	}
	return ln, nil
}

type allowListener struct {
	net.Listener
	a    *Allow
	name string
}

func (l *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.a.Allowed(c.RemoteAddr()) {
			return c, err
		}
		l.a.Refuse(l.name)
		c.Close()
	}
}

// IsLoopback reports whether a listen address binds loopback only: a
// host of localhost, 127.0.0.0/8 or ::1. An empty host ("":8124, all
// addresses) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Access is what every listener checks at its boundary: the source
// allowlist, TLS for the listeners named in TLSOn, and tokens for those
// named in AuthOn. A nil *Access takes every source in plain text, with
// no token.
type Access struct {
	Allow  *Allow
	TLS    *Certs
	TLSOn  map[string]bool // listener names served over TLS when TLS is set
	Auth   *Tokens
	AuthOn map[string]bool // listener names that ask for a token when Auth is set
}

// AllowedIP reports whether a source address may send (statsd).
func (a *Access) AllowedIP(ip netip.Addr) bool { return a == nil || a.Allow.AllowedIP(ip) }

// Refuse counts a source refused by the listener named name.
func (a *Access) Refuse(name string) {
	if a != nil && a.Allow != nil {
		a.Allow.Refuse(name)
	}
}

// TLSFor reports whether the listener named name serves TLS.
func (a *Access) TLSFor(name string) bool { return a != nil && a.TLS != nil && a.TLSOn[name] }
