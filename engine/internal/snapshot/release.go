package snapshot

import (
	"fmt"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// Release tells the kernel the process no longer needs the pages of the
// database it has read through bbolt's memory map (madvise
// MADV_DONTNEED). The file's pages stay in the page cache, where the
// kernel may keep or reclaim them; they leave the process's resident set,
// and the next read of one maps it back from the cache (a minor fault).
// Without this every page a snapshot, compaction or retention pass ever
// walked stays counted in the process's RSS: 785 MiB of the 3.6 GiB at
// the end of a 1M × 120 load (docs/benchmarks.md).
//
// A read transaction is held meanwhile: bbolt remaps only under its
// exclusive mmap lock, so the mapping cannot move or shrink, and it
// covers every page the transaction's meta counts.
func (s *Store) Release() (err error) {
	defer caught(&err)
	err = s.db.View(func(tx *bolt.Tx) error {
		return release(s.db.Info().Data, uintptr(tx.Size()))
	})
	if err != nil {
		return fmt.Errorf("release the database's mapped pages: %w", err)
	}
	return nil
}

// releaseEvery is how many updates Commit puts between two releases of
// the pages its transaction has read: a snapshot at 100k series read
// 100 MiB of state and history leaves in one transaction (the soak in
// docs/benchmarks.md), all resident until the Release after it.
const releaseEvery = 1024

// releaseWalk is how many history chunks a compaction walk reads between
// two such releases (a chunk's leaf holds a few).
const releaseWalk = 4096

// releaseInTx is Release from inside a write transaction of db, between
// two of its puts. No read transaction is taken (bbolt would deadlock if
// this one grew the file): only the writer remaps, and it is here. Pages
// the transaction still refers to map back from the page cache when read,
// with the same bytes: bbolt writes with pwrite, never into a page a
// transaction can see. A failure only costs memory; the Release after the
// transaction reports it.
func releaseInTx(db *bolt.DB, tx *bolt.Tx) {
	defer func() { _ = recover() }()
	_ = release(db.Info().Data, uintptr(tx.Size()))
}

func release(addr, size uintptr) error {
	if size == 0 {
		return nil
	}
	if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, addr, size, syscall.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}
