package query

import (
	"io"
	"math"
	"sync"
	"sync/atomic"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// The hub encodes each entry of the store's change feed (stored changes
// and idle window ends) into its SSE frame once, for every subscriber. It
// follows the feed into blocks of frames, by feed position; subscribers
// write whole blocks straight from them (or, with ?match=, a block's
// frames filtered once per pattern and shared), so a subscriber holds no
// copy. A subscriber behind the oldest block reads the store's feed
// itself.
type hub struct {
	store Store
	done  <-chan struct{}
	// The hub works only while streams are open: with none, ingest pays
	// nothing for it.
	streams atomic.Int64
	wake    chan struct{} // poked when the first stream opens

	mu     sync.Mutex    // guards from, blocks, bytes and grown.
	from   uint64        // the hub encodes every entry after this feed position (MaxUint64: idle)
	blocks []*block      // oldest first; positions dense across consecutive blocks
	bytes  int           // frame bytes held
	grown  chan struct{} // closed and replaced when a block is added
}

const (
	hubBatch = 4096     // changes per block, at most
	hubBytes = 32 << 20 // frame bytes the hub keeps
)

// block holds the feed entries at positions first..first+len(keys)-1 as
// frames.
type block struct {
	first  uint64
	lastID uint64 // the SSE id of the last frame
	keys   []string
	offs   []int  // frame i is data[offs[i]:offs[i+1]]
	ticks  []bool // frame i is an idle window's end; nil when none is
	data   []byte

	mu       sync.Mutex           // guards filtered.
	filtered [2]map[string][]byte // frames whose key matches, by ?match= pattern; [1]: ticks left out
}

func (b *block) last() uint64 { return b.first + uint64(len(b.keys)) - 1 }

func newHub(store Store, done <-chan struct{}) *hub {
	return &hub{store: store, done: done, from: math.MaxUint64, grown: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// join and leave count the open streams.
func (h *hub) join() {
	if h.streams.Add(1) == 1 {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

func (h *hub) leave() { h.streams.Add(-1) }

// run follows the change log while streams are open, until done.
func (h *hub) run() {
	buf := make([]sample.Change, 0, hubBatch)
	for {
		for h.streams.Load() == 0 {
			h.reset(math.MaxUint64)
			select {
			case <-h.wake:
			case <-h.done:
				return
			}
		}
		h.follow(buf)
		select {
		case <-h.done:
			return
		default:
		}
	}
}

// follow encodes the feed from its head until no stream is open.
func (h *hub) follow(buf []sample.Change) {
	pos := h.store.FeedHead()
	h.reset(pos)
	for h.streams.Load() > 0 {
		var ok bool
		buf, ok = h.store.Feed(pos, buf[:0], hubBatch)
		if !ok {
			// Fell behind the feed (the store moved on faster than the hub
			// could encode): start again at the head; subscribers read the
			// store for the gap.
			pos = h.store.FeedHead()
			h.reset(pos)
			continue
		}
		if len(buf) == 0 {
			select {
			case <-h.store.NotifyFeed(pos):
			case <-h.wake: // a stream opened or left: look at the count again
			case <-h.done:
				return
			}
			continue
		}
		h.add(encodeBlock(buf))
		pos = buf[len(buf)-1].Pos
	}
}

func encodeBlock(cs []sample.Change) *block {
	b := &block{first: cs[0].Pos, lastID: cs[len(cs)-1].ID, keys: make([]string, len(cs)), offs: make([]int, 0, len(cs)+1)}
	var body []byte
	for i, c := range cs {
		b.keys[i] = c.Key
		if c.Tick {
			if b.ticks == nil {
				b.ticks = make([]bool, len(cs))
			}
			b.ticks[i] = true
		}
		b.offs = append(b.offs, len(b.data))
		body = appendChange(body[:0], c)
		b.data = appendFrame(b.data, c.ID, body)
	}
	b.offs = append(b.offs, len(b.data))
	return b
}

// appendChange writes the JSON of one change: {"key":value} or {"key":null}
// (a tick's value is 0).
func appendChange(b []byte, c sample.Change) []byte {
	b = append(b, '{')
	b = appendString(b, c.Key)
	b = append(b, ':')
	if c.Deleted {
		b = append(b, "null"...)
	} else {
		b = appendFloat(b, c.Value)
	}
	return append(b, '}')
}

// reset drops the blocks; the hub covers the changes after from.
func (h *hub) reset(from uint64) {
	h.mu.Lock()
	h.from, h.blocks, h.bytes = from, nil, 0
	h.mu.Unlock()
}

func (h *hub) add(b *block) {
	h.mu.Lock()
	h.blocks = append(h.blocks, b)
	h.bytes += len(b.data)
	for len(h.blocks) > 1 && h.bytes > hubBytes {
		h.bytes -= len(h.blocks[0].data)
		h.blocks[0] = nil
		h.blocks = h.blocks[1:]
	}
	close(h.grown)
	h.grown = make(chan struct{})
	h.mu.Unlock()
}

// since returns the blocks holding feed entries after position pos, and a
// channel closed when the next block is added. ok is false when the entry
// right after pos is older than every block: the caller must read the
// store.
func (h *hub) since(pos uint64, dst []*block) (blocks []*block, grown <-chan struct{}, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	grown = h.grown
	if len(h.blocks) == 0 {
		return dst, grown, pos >= h.from
	}
	if h.blocks[0].first > pos+1 {
		return dst, grown, false
	}
	for _, b := range h.blocks {
		if b.last() > pos {
			dst = append(dst, b)
		}
	}
	return dst, grown, true
}

// write writes the frames of b after position pos whose key match accepts
// (all when match is nil), ticks only when asked, straight from the
// block's bytes: the subscriber copies nothing. Whole blocks are filtered
// once per pattern (and tick choice).
func (b *block) write(w io.Writer, pos uint64, pattern string, match func(string) bool, ticks bool) error {
	if ticks || b.ticks == nil {
		ticks = true // nothing to leave out
	}
	if pos < b.first {
		if match == nil && ticks {
			_, err := w.Write(b.data)
			return err
		}
		set := 0
		if !ticks {
			set = 1
		}
		b.mu.Lock()
		f, ok := b.filtered[set][pattern]
		if !ok {
			f = b.filter(nil, 0, match, ticks)
			if b.filtered[set] == nil {
				b.filtered[set] = make(map[string][]byte)
			}
			b.filtered[set][pattern] = f
		}
		b.mu.Unlock()
		_, err := w.Write(f)
		return err
	}
	for i := int(pos-b.first) + 1; i < len(b.keys); i++ {
		if b.keep(i, match, ticks) {
			if _, err := w.Write(b.data[b.offs[i]:b.offs[i+1]]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *block) keep(i int, match func(string) bool, ticks bool) bool {
	return (match == nil || match(b.keys[i])) && (ticks || !b.ticks[i])
}

func (b *block) filter(dst []byte, from int, match func(string) bool, ticks bool) []byte {
	for i := from; i < len(b.keys); i++ {
		if b.keep(i, match, ticks) {
			dst = append(dst, b.data[b.offs[i]:b.offs[i+1]]...)
		}
	}
	return dst
}
