package glo

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name, body string
		version    int
		time       int64
		items      []Item
		skipped    int
	}{
		{name: "version 1", body: `{"version":1,"timestamp":1313152128209,"data":[
			{"key":"server.request:count","value":"45023","desc":"Requests.","lvl":1},
			{"key":"cache:current","value":" 134 ","desc":"","lvl":2},
			{"key":"state:last","value":"running"},
			{"key":"req:last-duration-us","value":"12323"},
			{"key":"req:total-duration-us","value":"99"},
			{"key":"req:max-us","value":"7e3"},
			{"key":"odd:tag","value":"1"},
			{"key":"notag","value":"1"},
			{"key":":count","value":"1"},
			{"key":"neg:count","value":"-1"},
			{"key":"inf:current","value":"1e999"},
			{"key":"go:current","value":"1_000"},
			{"key":"hex:current","value":"0x10"},
			{"key":"word:current","value":"Infinity"},
			{"key":"bool:current","value":true}]}`,
			version: 1, time: 1313152128209, items: []Item{
				{"server.request", "count", 45023, true}, {"cache", "current", 134, false},
				{"req", "last-duration-us", 12323, false}, {"req", "total-duration-us", 99, true}, {"req", "max-us", 7000, false}},
			skipped: 10},
		{name: "version 2, JSONP", body: `jQuery16_1({"version":2,"timestamp":1313152128209000,"data":[
			{"key":"/server/request:count","value":45023},{"key":"/a:current","value":"-1.5"}]});`,
			version: 2, time: 1313152128209, items: []Item{{"server.request", "count", 45023, true}, {"a", "current", -1.5, false}}},
		{name: "no timestamp", body: ` {"version":1,"data":[]} `, version: 1},
	} {
		doc, err := Parse([]byte(c.body), 0)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if doc.Version != c.version || doc.Time != c.time || !slices.Equal(doc.Items, c.items) || doc.Skipped != c.skipped {
			t.Fatalf("%s: got %+v", c.name, doc)
		}
	}
	doc, err := Parse([]byte(`{"version":1,"data":[{"key":"a:count","value":"1"},{"key":"b:count","value":"2"},{"key":"c:count","value":"3"}]}`), 2)
	if err != nil || len(doc.Items) != 2 || doc.Skipped != 1 {
		t.Fatalf("bounded at 2 items: %+v, %v", doc, err)
	}
	for _, bad := range []string{``, `{}`, `{"version":3,"data":[]}`, `{"version":1,"timestamp":-1}`, `{"version":1,"timestamp":1.5}`,
		`[1]`, `{"version":1} {}`, `cb({"version":1}`, `alert(1)//({"version":1})`, `{"version":1,"data":{}}`} {
		if _, err := Parse([]byte(bad), 0); !errors.Is(err, ErrFormat) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func TestCallbackName(t *testing.T) {
	for name, want := range map[string]bool{"jQuery16_1": true, "$": true, "a.b.c": true, "_x9": true,
		"": false, "9a": false, ".a": false, "a(b": false, "a;b": false, "a b": false, string(make([]byte, 129)): false} {
		if got := CallbackName(name); got != want {
			t.Fatalf("CallbackName(%q) = %v", name, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"timestamp":5,"data":[{"key":"a:count","value":"1"}]}`))
	f.Add([]byte(`cb({"version":2,"timestamp":5000,"data":[{"key":"/a/b:current","value":1.5}]});`))
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, err := Parse(body, 100)
		if err != nil {
			return
		}
		if doc.Version != 1 && doc.Version != 2 || doc.Time < 0 || len(doc.Items) > 100 {
			t.Fatalf("doc %+v", doc)
		}
		for _, it := range doc.Items {
			counter, ok := Counter(it.Tag)
			if !ok || counter != it.Counter || it.Name == "" || math.IsNaN(it.Value) || math.IsInf(it.Value, 0) || counter && it.Value < 0 {
				t.Fatalf("item %+v", it)
			}
		}
	})
}
