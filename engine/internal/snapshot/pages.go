package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"syscall"
)

// bbolt's file format (go.etcd.io/bbolt, internal/common), read here
// without bbolt. bbolt trusts its pages: a damaged one makes it panic, and
// with NoFreelistSync it walks every page at open in a goroutine of its
// own, where the panic cannot be caught. So Open walks the tree first with
// this careful reader, and sonde check and sonde repair use it to report
// and salvage.
const (
	pageHeaderSize  = 16 // id u64, flags u16, count u16, overflow u32
	branchElemSize  = 16 // pos u32, ksize u32, pgid u64
	leafElemSize    = 16 // flags u32, pos u32, ksize u32, vsize u32
	bucketHeaderLen = 16 // root pgid u64, sequence u64
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	metaPageFlag    = 0x04
	bucketLeafFlag  = 0x01
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	metaLen         = 64 // magic, version, page size, flags, root bucket (16), freelist, pgid, txid, checksum
)

// boltFile is a bbolt file mapped read-only.
type boltFile struct {
	data     []byte
	pageSize int
	root     uint64 // the root bucket's page
	hwm      uint64 // pages at or above are not in use
	txid     uint64
}

// mapFile maps path read-only; close unmaps it.
func mapFile(path string) (*boltFile, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return &boltFile{}, func() {}, nil
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return &boltFile{data: data}, func() { syscall.Munmap(data) }, nil
}

// readMeta picks the valid meta page with the higher transaction id, as
// bbolt does.
func (f *boltFile) readMeta() error {
	var errs []error
	found := false
	for i := range 2 {
		size := 4096
		if i == 1 && f.pageSize > 0 {
			size = f.pageSize
		} else if i == 1 {
			size = os.Getpagesize() // where bbolt looks when meta 0 is gone
		}
		off := i * size
		if off+pageHeaderSize+metaLen > len(f.data) {
			errs = append(errs, fmt.Errorf("meta page %d: the file is %d bytes", i, len(f.data)))
			continue
		}
		p := f.data[off:]
		m := p[pageHeaderSize : pageHeaderSize+metaLen]
		le := binary.LittleEndian
		h := fnv.New64a()
		h.Write(m[:56])
		switch {
		case le.Uint16(p[8:]) != metaPageFlag:
			errs = append(errs, fmt.Errorf("meta page %d: not a meta page", i))
		case le.Uint32(m) != boltMagic || le.Uint32(m[4:]) != boltVersion:
			errs = append(errs, fmt.Errorf("meta page %d: not a bbolt meta page of version %d", i, boltVersion))
		case le.Uint64(m[56:]) != h.Sum64():
			errs = append(errs, fmt.Errorf("meta page %d: checksum mismatch", i))
		default:
			if txid := le.Uint64(m[48:]); !found || txid > f.txid {
				found = true
				f.pageSize = int(le.Uint32(m[8:]))
				f.root = le.Uint64(m[16:])
				f.hwm = le.Uint64(m[40:])
				f.txid = txid
			}
		}
	}
	if !found {
		return fmt.Errorf("both meta pages are damaged: %w", errors.Join(errs...))
	}
	if f.pageSize < 512 || f.pageSize > 1<<16 || f.root < 2 || f.root >= f.hwm {
		return fmt.Errorf("the meta page holds page size %d, root %d, %d pages", f.pageSize, f.root, f.hwm)
	}
	return nil
}

// walker walks the pages of a bbolt file's tree, checking each before it
// reads it. In lenient mode it records damage and goes on with the rest;
// else the first damage ends the walk.
type walker struct {
	f       *boltFile
	seen    map[uint64]bool
	lenient bool
	damage  []error
	pages   map[string]*PageUse // by bucket ("" for the root's own pages); nil: not counted
}

// PageUse is what the pages of one bucket hold.
type PageUse struct {
	Pages int   // pages, overflow pages included
	Bytes int64 // their size
	Used  int64 // bytes written in them: headers, elements, keys, values
}

// use returns the page use of bucket.
func (w *walker) use(bucket []byte) *PageUse {
	u := w.pages[string(bucket)]
	if u == nil {
		u = &PageUse{}
		w.pages[string(bucket)] = u
	}
	return u
}

var errStop = errors.New("stop")

func (w *walker) fail(err error) error {
	w.damage = append(w.damage, err)
	if w.lenient {
		return nil
	}
	return errStop
}

// page returns page id with its overflow pages, checked.
func (w *walker) page(id uint64) ([]byte, error) {
	f := w.f
	if id < 2 || id >= f.hwm {
		return nil, fmt.Errorf("page %d is outside the file's %d pages", id, f.hwm)
	}
	if w.seen[id] {
		return nil, fmt.Errorf("page %d is reached twice", id)
	}
	w.seen[id] = true
	off := int(id) * f.pageSize
	if off+pageHeaderSize > len(f.data) {
		return nil, fmt.Errorf("page %d lies past the end of the file", id)
	}
	p := f.data[off:]
	le := binary.LittleEndian
	if got := le.Uint64(p); got != id {
		return nil, fmt.Errorf("page %d says it is page %d", id, got)
	}
	over := uint64(le.Uint32(p[12:]))
	if id+over >= f.hwm || off+int(over+1)*f.pageSize > len(f.data) {
		return nil, fmt.Errorf("page %d runs %d pages past the end", id, over)
	}
	for o := id + 1; o <= id+over; o++ {
		w.seen[o] = true
	}
	return p[:int(over+1)*f.pageSize], nil
}

// span names the keys a page holds, for a report of what its damage
// lost: those from lo (its parent's element for it) up to hi (the next
// element's), in bucket.
type span struct {
	bucket []byte
	lo, hi []byte
}

func (s span) String() string {
	var b strings.Builder
	if s.bucket != nil {
		fmt.Fprintf(&b, "bucket %s, ", s.bucket)
	}
	switch {
	case s.lo == nil && s.hi == nil:
		b.WriteString("all keys")
	case s.lo == nil:
		fmt.Fprintf(&b, "keys from the first up to %s", describeKey(string(s.bucket), s.hi))
	case s.hi == nil:
		fmt.Fprintf(&b, "keys from %s on", describeKey(string(s.bucket), s.lo))
	default:
		fmt.Fprintf(&b, "keys from %s up to %s", describeKey(string(s.bucket), s.lo), describeKey(string(s.bucket), s.hi))
	}
	return b.String()
}

// walkTree walks the tree rooted at page id (or the inline page given),
// calling fn for each leaf entry in key order. sp says which keys it holds.
func (w *walker) walkTree(id uint64, inline []byte, sp span, fn func(k, v []byte, bucket bool) error) error {
	var p []byte
	if inline != nil {
		p = inline
	} else {
		var err error
		if p, err = w.page(id); err != nil {
			return w.fail(fmt.Errorf("%v (%s lost)", err, sp))
		}
	}
	le := binary.LittleEndian
	if len(p) < pageHeaderSize {
		return w.fail(fmt.Errorf("an inline page of %d bytes", len(p)))
	}
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	var prev []byte
	bad := 0 // unreadable leaf entries since the last good one
	switch flags {
	case branchPageFlag, leafPageFlag:
	default:
		return w.fail(fmt.Errorf("page %d has flags %#x: neither a branch nor a leaf (%s lost)", id, flags, sp))
	}
	if pageHeaderSize+count*leafElemSize > len(p) {
		return w.fail(fmt.Errorf("page %d: %d elements do not fit (%s lost)", id, count, sp))
	}
	var use *PageUse // nil for a bucket's inline page, which its parent's counts
	if inline == nil && w.pages != nil {
		use = w.use(sp.bucket)
		use.Pages += len(p) / w.f.pageSize
		use.Bytes += int64(len(p))
		use.Used += pageHeaderSize
	}
	// A branch element's key is the first key of its child: the child
	// holds the keys up to the next element's.
	branchKey := func(i int) []byte {
		e := pageHeaderSize + i*branchElemSize
		pos, ksize := int(le.Uint32(p[e:])), int(le.Uint32(p[e+4:]))
		if e+pos+ksize > len(p) {
			return nil
		}
		return p[e+pos : e+pos+ksize]
	}
	for i := range count {
		e := pageHeaderSize + i*leafElemSize
		if flags == branchPageFlag {
			child := le.Uint64(p[e+8:])
			key := branchKey(i)
			if use != nil {
				use.Used += int64(branchElemSize + len(key))
			}
			childSpan := span{bucket: sp.bucket, lo: key, hi: sp.hi}
			if i+1 < count {
				childSpan.hi = branchKey(i + 1)
			}
			if key == nil {
				if err := w.fail(fmt.Errorf("page %d: branch element %d points outside the page (%s lost)", id, i, childSpan)); err != nil {
					return err
				}
				continue
			}
			if prev != nil && bytes.Compare(prev, key) >= 0 {
				if err := w.fail(fmt.Errorf("page %d: keys out of order at element %d (%s lost)", id, i, childSpan)); err != nil {
					return err
				}
				continue
			}
			prev = key
			if err := w.walkTree(child, nil, childSpan, fn); err != nil {
				return err
			}
			continue
		}
		eflags, pos, ksize, vsize := le.Uint32(p[e:]), int(le.Uint32(p[e+4:])), int(le.Uint32(p[e+8:])), int(le.Uint32(p[e+12:]))
		var key, val []byte
		if pos >= 0 && ksize >= 0 && vsize >= 0 && e+pos+ksize+vsize <= len(p) {
			key, val = p[e+pos:e+pos+ksize], p[e+pos+ksize:e+pos+ksize+vsize]
		}
		if key == nil || (prev != nil && bytes.Compare(prev, key) >= 0) {
			bad++ // reported with the keys around it, once the next good one is known
			continue
		}
		if use != nil {
			use.Used += int64(leafElemSize + ksize + vsize)
		}
		if bad > 0 {
			if err := w.fail(fmt.Errorf("page %d: %s unreadable (%s lost)", id, entries(bad), span{sp.bucket, lastGood(prev, sp.lo), key})); err != nil {
				return err
			}
			bad = 0
		}
		prev = key
		if err := fn(key, val, eflags&bucketLeafFlag != 0); err != nil {
			return err
		}
	}
	if bad > 0 {
		if err := w.fail(fmt.Errorf("page %d: %s unreadable (%s lost)", id, entries(bad), span{sp.bucket, lastGood(prev, sp.lo), sp.hi})); err != nil {
			return err
		}
	}
	return nil
}

func entries(n int) string {
	if n == 1 {
		return "an entry"
	}
	return fmt.Sprintf("%d entries", n)
}

func lastGood(prev, lo []byte) []byte {
	if prev != nil {
		return prev
	}
	return lo
}

// walkBuckets walks every top-level bucket, calling fn with its name and
// each of its entries.
func (w *walker) walkBuckets(fn func(bucket, k, v []byte) error) error {
	return w.walkTree(w.f.root, nil, span{}, func(name, v []byte, bucket bool) error {
		if !bucket {
			return nil // a key in the root bucket: Sonde writes none
		}
		if len(v) < bucketHeaderLen {
			return w.fail(fmt.Errorf("bucket %q: a header of %d bytes (the whole bucket lost)", name, len(v)))
		}
		root := binary.LittleEndian.Uint64(v)
		var inline []byte
		if root == 0 {
			inline = v[bucketHeaderLen:]
		}
		return w.walkTree(root, inline, span{bucket: name}, func(k, val []byte, sub bool) error {
			if sub {
				return w.fail(fmt.Errorf("bucket %q holds a bucket %q: Sonde writes none", name, k))
			}
			return fn(name, k, val)
		})
	})
}

// FilePages is how a bbolt file's pages are used.
type FilePages struct {
	PageSize int
	// InUse is the pages up to the highest one in use (the file may be
	// longer: bbolt grows it ahead); Free those of them that no bucket
	// holds (bbolt's free list, rebuilt at open, and the meta pages).
	InUse, Free int
	Buckets     map[string]PageUse
	// Partial: the walk met damage in the tree; pages it could not read
	// count in no bucket, and those it could not reach count as free. A
	// value that fails its seal or its decoder is not tree damage.
	Partial bool
}

// walkFile maps the bbolt file at path and walks every bucket's entries
// with fn (lenient: it goes on past damage). It returns the damage found;
// a missing or empty file has none, and no entries.
func walkFile(path string, lenient bool, fn func(bucket, k, v []byte) error) ([]error, error) {
	damage, _, err := walkPages(path, lenient, false, fn)
	return damage, err
}

// walkPages is walkFile, and, when count is set, what the pages it
// reached hold (startup's check of the file skips that).
func walkPages(path string, lenient, count bool, fn func(bucket, k, v []byte) error) ([]error, FilePages, error) {
	var fp FilePages
	if st, err := os.Stat(path); err != nil {
		if os.IsNotExist(err) {
			return nil, fp, nil
		}
		return nil, fp, err
	} else if st.Size() == 0 {
		return nil, fp, nil
	}
	f, unmap, err := mapFile(path)
	if err != nil {
		return nil, fp, err
	}
	defer unmap()
	if err := f.readMeta(); err != nil {
		return []error{err}, fp, nil
	}
	w := &walker{f: f, seen: make(map[uint64]bool), lenient: lenient}
	if count {
		w.pages = map[string]*PageUse{}
	}
	if err := w.walkBuckets(fn); err != nil && !errors.Is(err, errStop) {
		return w.damage, fp, err
	}
	if !count {
		return w.damage, fp, nil
	}
	fp = FilePages{PageSize: f.pageSize, InUse: int(f.hwm), Free: int(f.hwm) - len(w.seen), Buckets: map[string]PageUse{},
		Partial: len(w.damage) > 0}
	for b, u := range w.pages {
		fp.Buckets[b] = *u
	}
	return w.damage, fp, nil
}

// verifyFile checks the structure of the bbolt file at path (meta pages,
// the tree of every bucket: page ids, flags, element bounds, key order)
// without bbolt, so that a damaged file is refused with an error instead
// of a panic. A missing or empty file is fine: bbolt creates it.
func verifyFile(path string) error {
	damage, err := walkFile(path, false, func(_, _, _ []byte) error { return nil })
	if err != nil {
		return err
	}
	if len(damage) > 0 {
		return &DamageError{Err: damage[0]}
	}
	return nil
}
