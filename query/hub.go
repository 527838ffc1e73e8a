package query

import (
	"errors"
	"sync"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// The hub encodes each change into its SSE frame once, for every
// subscriber. It follows the store's change log into blocks of frames;
// subscribers copy whole blocks (or, with ?match=, a block's frames
// filtered once per pattern and shared). A subscriber behind the oldest
// block reads the store's change log itself, as before the hub.
type hub struct {
	store Store
	done  <-chan struct{}

	mu     sync.Mutex    // guards blocks, bytes and grown.
	blocks []*block      // oldest first; ids dense across consecutive blocks
	bytes  int           // frame bytes held
	grown  chan struct{} // closed and replaced when a block is added
}

const (
	hubBatch = 4096     // changes per block, at most
	hubBytes = 32 << 20 // frame bytes the hub keeps
)

// block holds consecutive changes first..first+len(keys)-1 as frames.
type block struct {
	first uint64
	keys  []string
	offs  []int // frame i is data[offs[i]:offs[i+1]]
	data  []byte

	mu       sync.Mutex        // guards filtered.
	filtered map[string][]byte // frames whose key matches, by ?match= pattern
}

func (b *block) last() uint64 { return b.first + uint64(len(b.keys)) - 1 }

func newHub(store Store, done <-chan struct{}) *hub {
	return &hub{store: store, done: done, grown: make(chan struct{})}
}

// run follows the change log until done.
func (h *hub) run() {
	after := h.store.Index()
	buf := make([]sample.Change, 0, hubBatch)
	for {
		var err error
		buf, err = h.store.Changes(after, buf[:0], hubBatch)
		if errors.Is(err, sample.ErrGone) {
			// Fell behind the log (the store moved on faster than the hub
			// could encode): start again at the head; the blocks left keep
			// their ids, so subscribers fall back to the store for the gap.
			h.reset()
			after = h.store.Index()
			continue
		}
		if err != nil || len(buf) == 0 {
			select {
			case <-h.store.Notify(after):
			case <-h.done:
				return
			}
			continue
		}
		if buf[0].ID != after+1 {
			h.reset() // not dense with what the hub holds
		}
		h.add(encodeBlock(buf))
		after = buf[len(buf)-1].ID
	}
}

func encodeBlock(cs []sample.Change) *block {
	b := &block{first: cs[0].ID, keys: make([]string, len(cs)), offs: make([]int, 0, len(cs)+1)}
	var body []byte
	for i, c := range cs {
		b.keys[i] = c.Key
		b.offs = append(b.offs, len(b.data))
		body = appendChange(body[:0], c)
		b.data = appendFrame(b.data, c.ID, body)
	}
	b.offs = append(b.offs, len(b.data))
	return b
}

// appendChange writes the JSON of one change: {"key":value} or {"key":null}.
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

func (h *hub) reset() {
	h.mu.Lock()
	h.blocks, h.bytes = nil, 0
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

// since returns the blocks holding changes after id, and a channel closed
// when the next block is added. ok is false when the change right after
// id is older than every block: the caller must read the store.
func (h *hub) since(id uint64, dst []*block) (blocks []*block, grown <-chan struct{}, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	grown = h.grown
	if len(h.blocks) == 0 {
		return dst, grown, true
	}
	if h.blocks[0].first > id+1 {
		return dst, grown, false
	}
	for _, b := range h.blocks {
		if b.last() > id {
			dst = append(dst, b)
		}
	}
	return dst, grown, true
}

// frames appends the frames of b after id whose key match accepts (all
// when match is nil). Whole blocks are filtered once per pattern.
func (b *block) frames(dst []byte, id uint64, pattern string, match func(string) bool) []byte {
	if id < b.first {
		if match == nil {
			return append(dst, b.data...)
		}
		b.mu.Lock()
		f, ok := b.filtered[pattern]
		if !ok {
			f = b.filter(nil, 0, match)
			if b.filtered == nil {
				b.filtered = make(map[string][]byte)
			}
			b.filtered[pattern] = f
		}
		b.mu.Unlock()
		return append(dst, f...)
	}
	return b.filter(dst, int(id-b.first)+1, match)
}

func (b *block) filter(dst []byte, from int, match func(string) bool) []byte {
	for i := from; i < len(b.keys); i++ {
		if match == nil || match(b.keys[i]) {
			dst = append(dst, b.data[b.offs[i]:b.offs[i+1]]...)
		}
	}
	return dst
}
