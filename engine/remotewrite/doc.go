// Package remotewrite forwards every point Sonde stores to Prometheus
// remote_write endpoints (VictoriaMetrics, Prometheus, Thanos, Mimir),
// reading them from Sonde's own WAL.
//
// Each destination reads the WAL from a durable position (its journal,
// docs/format/remote-write.md) through engine.DB.ReadPoints, as Prometheus'
// WAL watcher feeds its queue manager; an engine.Hold keeps the records it
// has not sent from being cut after a snapshot. The reader cuts what it
// reads into chunks (a range of WAL indexes), records each chunk in the
// journal (fsynced) before any of it is sent, and hands each chunk's
// points to shards by series, so a series' points reach the receiver in
// order. Each shard sends its part of a chunk as protobuf + snappy
// requests, one at a time, retrying 5xx, 429 and network errors with
// backoff. A chunk is done once every shard acknowledged its part; the
// position moves over chunks done in order.
//
// After a crash the chunks recorded but not done are sent again exactly as
// they were cut (resends). A receiver that already has a chunk's part may
// refuse it (Prometheus refuses a whole request holding a sample older
// than the newest of its series, and keeps nothing of it): a resend part
// refused with a 4xx is counted as duplicates. A part that is not a resend
// and is refused with a 4xx other than 429 is split and sent again in
// halves, in order, down to single points, so one refused point costs only
// itself (counted in refused and logged).
//
// docs/remote-write.md has the naming rules, the settings and the figures.
package remotewrite
