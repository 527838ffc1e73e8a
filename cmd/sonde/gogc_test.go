package main

import "testing"

// TestGOGC: the server runs its collector at -gogc, 30 unless told.
func TestGOGC(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  uint64
	}{{nil, defaultGOGC}, {[]string{"-gogc", "75"}, 75}} {
		p := start(t, t.TempDir(), tc.flags...)
		var st struct {
			Go struct {
				GOGC uint64 `json:"gogc"`
			} `json:"go"`
		}
		p.get("/api/v1/stats", &st)
		if st.Go.GOGC != tc.want {
			t.Errorf("%v: the server runs with GOGC %d, want %d", tc.flags, st.Go.GOGC, tc.want)
		}
		p.stop()
	}
}

// TestGOGCFlag: the GOGC environment variable wins over the default, the
// flag over both; a percentage must be above 0.
func TestGOGCFlag(t *testing.T) {
	t.Setenv("GOGC", "")
	if c, err := parseFlags(nil); err != nil || c.gogc != defaultGOGC {
		t.Fatalf("no flag, no environment: %d %v", c.gogc, err)
	}
	t.Setenv("GOGC", "200")
	if c, err := parseFlags(nil); err != nil || c.gogc != 0 {
		t.Fatalf("GOGC=200, no flag: %d %v, want 0 (the runtime's)", c.gogc, err)
	}
	if c, err := parseFlags([]string{"-gogc", "50"}); err != nil || c.gogc != 50 {
		t.Fatalf("GOGC=200, -gogc 50: %d %v", c.gogc, err)
	}
	for _, bad := range []string{"0", "-1"} {
		if _, err := parseFlags([]string{"-gogc", bad}); err == nil {
			t.Fatalf("-gogc %s taken", bad)
		}
	}
}
