// Package bench is sonde-bench's engine: the load generator that drives
// Sonde's ingest paths and reads over real sockets, and compares Sonde with
// a peer (VictoriaMetrics' single-node binary) on the same load. The
// command, cmd/sonde-bench, parses flags and prints; figures and their
// commands are in docs/benchmarks.md.
//
// What it measures, by entry point:
//
//   - Run: one load (mesures SET/INCR with every reply read, or Graphite
//     plaintext) at a rate or flat out; throughput, ack latency, and a
//     read-back of every key (tcp and graphite scenarios).
//   - Compare: the same load on Sonde (-fsync=always, then interval), the
//     peer, and Sonde over Graphite; kill -9 rounds; with Cardinality > 0,
//     the cardinality phase (Cardinality): N keys x 4 samples over
//     Graphite to Sonde, then the peer, each watched until quiet: peak RSS,
//     server CPU seconds, time until every sample is visible, time to stop.
//   - Soak: a paced load for a duration on Sonde (acknowledged SETs or
//     Graphite) and then on the peer (Graphite), each server's CPU time,
//     RSS and data directory sampled every second (watch, PlotProc): CPU
//     µs per sample, peak RSS, data-directory bytes per sample.
//   - QueryBench: concurrent reads of a running Sonde: /data, history,
//     Graphite /render of one key and of a 100-series glob, /metrics/find
//     one level down. QueryCompare loads the same Graphite data into Sonde
//     and the peer and asks each the Graphite reads (a peer with /render:
//     Debian's VictoriaMetrics 1.79 has none, a build from source has).
//   - Restart: the same load into Sonde and the peer, each killed with
//     SIGKILL and, on another directory, stopped with SIGTERM, then started
//     again on its own directory: seconds from exec until it listens and
//     until it serves every series, Sonde's over the peer's, and a
//     read-back of what came back.
//   - SSE, Statsd, Mem, Disk: the other scenarios of the command.
//
// What a server shows its readers is read from its own counts, cheaply
// (Sonde: /api/v1/stats; VictoriaMetrics: /metrics, then one query to
// confirm); when it is done with a load is read from its CPU time, which
// must stay under a share of a core for a window (IdleConfig), so that the
// work a server defers past the load counts.
package bench
