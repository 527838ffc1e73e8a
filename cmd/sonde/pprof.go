package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"

	"github.com/sonde-metrics/sonde/engine/boundary"
)

// servePprof serves Go's profiler on addr for as long as the process
// runs. It is off unless -pprof is given, and meant for loopback.
func servePprof(addr string, acc *boundary.Access, logger *slog.Logger) error {
	ln, err := boundary.Listen(acc, "pprof", addr)
	if err != nil {
		return fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	var h http.Handler = mux
	if acc.AuthFor("pprof") {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ap, _ := netip.ParseAddrPort(r.RemoteAddr)
			read := r.Method == http.MethodGet || r.Method == http.MethodHead
			v := acc.Authorize("pprof", ap.Addr().Unmap(), read, []byte(r.Header.Get("Authorization")), nil, []byte(r.URL.Query().Get("token")))
			if !v.OK {
				if name, value := v.Header(); name != "" {
					w.Header().Set(name, value)
				}
				w.Header().Set("Connection", "close")
				http.Error(w, v.Msg, v.Status)
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	logger.Info("pprof listening", "addr", ln.Addr().String())
	go func() {
		if err := http.Serve(ln, h); err != nil && !errors.Is(err, net.ErrClosed) {
			logger.Error("pprof server stopped", "err", err)
		}
	}()
	return nil
}
