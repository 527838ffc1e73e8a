package engine

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// An epoch is one life of the store's event ids: each Open starts one,
// at the WAL index recovery ended at. The ids up to that index are the
// ones the store kept from before; ids past it were not yet given out in
// this epoch, and may have been given out before, to other changes (ids
// a crash or a power loss took back, or a restore from a backup, or a
// wiped directory). A client that got ids in epoch E can trust ids up to
// the lowest start of the epochs after E, and nothing of an epoch the
// store does not know (docs/format/epochs.md).

// maxEpochs is how many epochs the file keeps: a client whose epoch is
// older is sent the whole state.
const maxEpochs = 64

// epoch is one line of the epochs file.
type epoch struct {
	id    uint64 // random, 1 to 2^53-1: it fits a float64 (a follower keeps it in a GAUGE)
	start uint64 // the WAL index the epoch started at
}

const epochsFile = "epochs"

// newEpochID draws an epoch id.
func newEpochID() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])%(1<<53-1) + 1
}

// readEpochs reads the epochs file in dir: none when it is missing. A
// damaged file reads as no epoch (an error says so): clients then start
// from the whole state, which is always right.
func readEpochs(dir string) ([]epoch, error) {
	b, err := os.ReadFile(filepath.Join(dir, epochsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the epochs file: %w", err)
	}
	var out []epoch
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			return nil, fmt.Errorf("epochs file, line %d: want an epoch and its start index", n)
		}
		id, err1 := strconv.ParseUint(f[0], 10, 64)
		start, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil || id == 0 || id >= 1<<53 {
			return nil, fmt.Errorf("epochs file, line %d: %q is not an epoch and its start index", n, sc.Text())
		}
		out = append(out, epoch{id, start})
	}
	return out, nil
}

// startEpoch adds an epoch starting at start to the file in dir (keeping
// the newest maxEpochs), written to a new file that replaces the old one.
// It returns the epochs, the new one last; on a failure to write, they
// are still right for this process, and the error says what failed.
func startEpoch(dir string, start uint64) ([]epoch, error) {
	eps, rerr := readEpochs(dir)
	eps = append(eps, epoch{newEpochID(), start})
	if len(eps) > maxEpochs {
		eps = eps[len(eps)-maxEpochs:]
	}
	var b bytes.Buffer
	for _, e := range eps {
		fmt.Fprintf(&b, "%d %d\n", e.id, e.start)
	}
	if err := writeFileSync(dir, epochsFile, b.Bytes()); err != nil {
		return eps, errors.Join(rerr, fmt.Errorf("write the epochs file: %w", err))
	}
	return eps, rerr
}

// writeFileSync replaces dir/name with data: a temporary file, fsynced,
// renamed over it, and the directory fsynced.
func writeFileSync(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// trustedThrough returns the highest event id a client that got its ids
// in epoch id can trust: all of them (MaxUint64) in the current epoch,
// up to the lowest start of the epochs after it in an older one. ok is
// false for an epoch the store does not know.
func trustedThrough(eps []epoch, id uint64) (through uint64, ok bool) {
	through = math.MaxUint64
	for i := len(eps) - 1; i >= 0; i-- {
		if eps[i].id == id {
			return through, true
		}
		through = min(through, eps[i].start)
	}
	return 0, false
}

// Epoch returns the id of the store's current epoch.
func (db *DB) Epoch() uint64 { return db.epochs[len(db.epochs)-1].id }

// TrustedThrough returns the highest event id a client that got its ids
// in epoch id can resume after; ok is false when the store does not
// know that epoch (the client must take the whole state).
func (db *DB) TrustedThrough(id uint64) (uint64, bool) { return trustedThrough(db.epochs, id) }
