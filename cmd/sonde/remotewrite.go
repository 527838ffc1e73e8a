package main

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sonde-metrics/sonde/engine/remotewrite"
)

// parseRemoteWrite reads URL[,name=NAME][,shards=N][,max-samples=N]
// [,timeout=D]. Its errors name the destination, never the URL, which may
// hold credentials.
func parseRemoteWrite(spec string, ext []remotewrite.Label) (remotewrite.Config, error) {
	u, rest, _ := strings.Cut(spec, ",")
	cfg := remotewrite.Config{URL: u, Name: remoteWriteName(u), ExternalLabels: ext}
	for rest != "" {
		var field string
		field, rest, _ = strings.Cut(rest, ",")
		name, v, _ := strings.Cut(field, "=")
		switch name {
		case "name":
			cfg.Name = v
		case "shards", "max-samples":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 && name == "shards" || n > 100_000 {
				return cfg, fmt.Errorf("-remote-write %s: %s=%s: want 1 to %d", cfg.Name, name, v, map[string]int{"shards": 64, "max-samples": 100_000}[name])
			}
			if name == "shards" {
				cfg.Shards = n
			} else {
				cfg.MaxSamples = n
			}
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond {
				return cfg, fmt.Errorf("-remote-write %s: timeout=%s is not a duration of 100ms or more", cfg.Name, v)
			}
			cfg.Timeout = d
		case "bearer-token-file":
			tok, err := readToken("-remote-write "+cfg.Name+" bearer-token-file=", v)
			if err != nil {
				return cfg, err
			}
			cfg.Header = http.Header{"Authorization": {"Bearer " + tok}}
		default:
			if !simpleField(name) {
				// Likely a comma inside the URL (a password): do not echo it.
				return cfg, fmt.Errorf("-remote-write %s: a field after a comma is not name=, shards=, max-samples=, timeout= or bearer-token-file= (a comma in the URL is written %%2C)", cfg.Name)
			}
			return cfg, fmt.Errorf("-remote-write %s: unknown field %q (name=, shards=, max-samples=, timeout=, bearer-token-file=; a comma in the URL is written %%2C)", cfg.Name, name)
		}
	}
	return cfg, cfg.Check()
}

// simpleField reports whether s looks like a field name ([a-z-], at most
// 32 bytes), which an error may show.
func simpleField(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= 'a' && s[i] <= 'z' || s[i] == '-') {
			return false
		}
	}
	return true
}

// remoteWriteName is a destination's default name: its host and port,
// "127.0.0.1:8428" → "127.0.0.1_8428".
func remoteWriteName(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "remote"
	}
	return strings.NewReplacer(":", "_", "[", "", "]", "").Replace(u.Host)
}

// remoteWriteDir is where the destinations' journals live.
func remoteWriteDir(dataDir string) string { return filepath.Join(dataDir, "remote_write") }

var remoteWriteMetrics = struct {
	backlog, sent, requests, retries, refused, duplicates, cut, lastSuccess *prometheus.Desc
}{
	backlog:     prometheus.NewDesc("sonde_remote_write_backlog_records", "WAL records not yet sent to the destination.", []string{"destination"}, nil),
	sent:        prometheus.NewDesc("sonde_remote_write_sent_points_total", "Points the destination acknowledged since start.", []string{"destination"}, nil),
	requests:    prometheus.NewDesc("sonde_remote_write_requests_total", "Requests the destination acknowledged since start.", []string{"destination"}, nil),
	retries:     prometheus.NewDesc("sonde_remote_write_retries_total", "Requests that failed (5xx, 429, timeout, network) and were sent again, since start.", []string{"destination"}, nil),
	refused:     prometheus.NewDesc("sonde_remote_write_refused_points_total", "Points the destination refused on their own with a 4xx, dropped, since start.", []string{"destination"}, nil),
	duplicates:  prometheus.NewDesc("sonde_remote_write_duplicate_points_total", "Points resent after a restart that the destination refused as ones it had, since start.", []string{"destination"}, nil),
	cut:         prometheus.NewDesc("sonde_remote_write_cut_records_total", "WAL records cut before they were sent (-remote-write-max-backlog), since start.", []string{"destination"}, nil),
	lastSuccess: prometheus.NewDesc("sonde_remote_write_last_success_timestamp_seconds", "When the destination last acknowledged a request.", []string{"destination"}, nil),
}

func describeRemoteWrite(ch chan<- *prometheus.Desc) {
	d := &remoteWriteMetrics
	for _, desc := range []*prometheus.Desc{d.backlog, d.sent, d.requests, d.retries, d.refused, d.duplicates, d.cut, d.lastSuccess} {
		ch <- desc
	}
}

func collectRemoteWrite(ch chan<- prometheus.Metric, stats []remotewrite.Stats) {
	d := &remoteWriteMetrics
	for _, s := range stats {
		ch <- prometheus.MustNewConstMetric(d.backlog, prometheus.GaugeValue, float64(s.Backlog), s.Name)
		ch <- prometheus.MustNewConstMetric(d.sent, prometheus.CounterValue, float64(s.Sent), s.Name)
		ch <- prometheus.MustNewConstMetric(d.requests, prometheus.CounterValue, float64(s.Requests), s.Name)
		ch <- prometheus.MustNewConstMetric(d.retries, prometheus.CounterValue, float64(s.Retries), s.Name)
		ch <- prometheus.MustNewConstMetric(d.refused, prometheus.CounterValue, float64(s.Refused), s.Name)
		ch <- prometheus.MustNewConstMetric(d.duplicates, prometheus.CounterValue, float64(s.Duplicates), s.Name)
		ch <- prometheus.MustNewConstMetric(d.cut, prometheus.CounterValue, float64(s.Cut), s.Name)
		if s.LastSuccess > 0 {
			ch <- prometheus.MustNewConstMetric(d.lastSuccess, prometheus.GaugeValue, float64(s.LastSuccess)/1000, s.Name)
		}
	}
}
