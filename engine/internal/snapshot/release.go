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

func release(addr, size uintptr) error {
	if size == 0 {
		return nil
	}
	if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, addr, size, syscall.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}
