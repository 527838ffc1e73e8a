package boundary

import (
	"io"
	"net"
	"testing"
)

// BenchmarkAccept measures one short-lived HTTP/1.1 connection: dial,
// send a head, the server accepts and reads it, answers and closes; on a
// plain listener and through a Gate, which adds a goroutine and a copy of
// the head per connection. Compare the two lines of one run:
//
//	go test -run '^$' -bench BenchmarkAccept -count 5 ./engine/boundary
func BenchmarkAccept(b *testing.B) {
	for _, name := range []string{"direct", "gate"} {
		b.Run("listener="+name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var l net.Listener = ln
			if name == "gate" {
				l = NewGate(ln, GateOptions{})
			}
			defer l.Close()
			go func() {
				buf := make([]byte, 4096)
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					for n := 0; !headComplete(buf[:n]); {
						m, err := c.Read(buf[n:])
						if err != nil {
							break
						}
						n += m
					}
					io.WriteString(c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
					c.Close()
				}
			}()
			head := []byte("GET /data HTTP/1.1\r\nHost: sonde\r\nUser-Agent: bench\r\n\r\n")
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c.Write(head)
				io.Copy(io.Discard, c)
				c.Close()
			}
		})
	}
}
