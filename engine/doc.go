// Package engine is Sonde's storage engine: a write-ahead log feeding a
// lock-free hot state with history rings, folded into a bbolt snapshot.
//
// # Write path
//
// [DB.Append] queues a batch for the committer, the only goroutine that
// writes. It validates each op against its own view of the state, logs
// the post-image (the state after the op), writes the group with one
// WriteBatch and one fsync (per [FsyncPolicy]), then publishes the group
// to readers and subscribers and releases the callers.
//
// # Reads
//
// [DB.Get], [DB.Series] and [DB.Range] read atomics and rings without
// locks; older history comes from the snapshot database. [DB.Changes] and
// [DB.Notify] let subscribers follow every change by WAL index.
//
// # Recovery
//
// [Open] loads the snapshot, then replays the WAL after the index it
// covers. A torn WAL tail is cut (and logged); corruption elsewhere makes
// Open fail. docs/architecture.md and docs/format/ describe the details.
//
//	db, err := engine.Open("./data", engine.Options{})
//	if err != nil { ... }
//	defer db.Close()
//	errs := make([]error, 1)
//	err = db.Append(ctx, []sample.Op{{Code: sample.Set, Key: "answer", Value: 42}}, errs)
package engine
