package snapshot

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sonde-metrics/sonde/engine/sample"
)

// TestClientsRoundTrip: a stored client reads back as written, a
// forgotten one is gone, and every cut of an entry is damage.
func TestClientsRoundTrip(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := ClientState{ClientInfo: sample.ClientInfo{Name: "w1", Connected: true, ConnectedAt: 5, DisconnectedAt: 3, LastLine: 9, Lines: 2, Sets: 1},
		Covers: 12, ConnIdx: 10, DiscIdx: 4, Dropped: 7, DroppedAt: 6,
		Log:   []sample.ClientLine{{ID: 11, Time: 8, Text: "one"}, {ID: 12, Time: 9, Text: "two ✓"}},
		State: []ClientKey{{Key: "phase", ID: 11, Time: 8, Text: ""}}}
	other := ClientState{ClientInfo: sample.ClientInfo{Name: "w2"}, Log: []sample.ClientLine{}, State: []ClientKey{}}
	if err := s.PutClients(&Clients{Put: []ClientState{c, other}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutClients(&Clients{Forget: []string{"w2"}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadClients()
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], c) {
		t.Fatalf("loaded %+v, %v; want %+v", got, err, c)
	}
	b := encodeClient(nil, &c)
	for i := range len(b) {
		var d ClientState
		if err := decodeClient([]byte("w1"), b[:i], &d); err == nil {
			t.Fatalf("a cut at %d of %d bytes decodes", i, len(b))
		}
	}
}
