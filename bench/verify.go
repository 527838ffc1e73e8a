package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// VerifyResult is what the read-back found.
type VerifyResult struct {
	Keys    int    `json:"keys"`   // keys that were sent at least one sample
	Found   int    `json:"found"`  // of those, keys the server returned
	Wrong   int    `json:"wrong"`  // found with another last value
	Stored  int64  `json:"stored"` // samples the server holds for the run's keys
	Polls   int    `json:"polls"`  // read-backs until it all showed (or the timeout)
	Example string `json:"example,omitempty"`
}

func (v *VerifyResult) ok(sent int64) bool {
	return v.Found == v.Keys && v.Wrong == 0 && v.Stored >= sent
}

var httpClient = &http.Client{Timeout: time.Minute}

// waitVisible reads every key back until each shows its last value and
// the server holds every sample sent, or the timeout passes.
func waitVisible(ctx context.Context, cfg Config, works []*workload) (*VerifyResult, error) {
	want := map[string]float64{}
	var sent int64
	for _, w := range works {
		for k, key := range w.keys {
			if w.sent[k] > 0 {
				want[string(key)] = w.state[k]
				sent += w.sent[k]
			}
		}
	}
	deadline := time.Now().Add(cfg.VisibleTimeout)
	v := &VerifyResult{Keys: len(want)}
	for {
		v.Polls++
		got, stored, err := readBack(ctx, cfg)
		if err == nil {
			v.Found, v.Wrong, v.Stored, v.Example = 0, 0, stored, ""
			for k, x := range want {
				y, ok := got[k]
				switch {
				case !ok:
					if v.Example == "" {
						v.Example = fmt.Sprintf("%s: missing", k)
					}
				case !same(x, y):
					v.Found++
					v.Wrong++
					if v.Example == "" {
						v.Example = fmt.Sprintf("%s: got %g, want %g", k, y, x)
					}
				default:
					v.Found++
				}
			}
			if v.ok(sent) {
				return v, nil
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return v, fmt.Errorf("read back: %w", err)
			}
			return v, fmt.Errorf("read back: after %s, %d of %d keys found, %d wrong, %d of %d samples stored (%s)",
				cfg.VisibleTimeout, v.Found, v.Keys, v.Wrong, v.Stored, sent, v.Example)
		}
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return v, err
		}
	}
}

func same(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// readBack returns the last value of every key of the run and how many
// samples the server holds for them.
func readBack(ctx context.Context, cfg Config) (map[string]float64, int64, error) {
	switch cfg.API {
	case "sonde":
		// One answer holds at most -query-max-bytes (32 MiB: about 400k
		// series): past 100k keys, read them a hundredth at a time, by the
		// first two digits of KeyName's number.
		globs := []string{cfg.Prefix + ".*"}
		if cfg.Keys > 100_000 {
			globs = globs[:0]
			for d := range 100 {
				globs = append(globs, fmt.Sprintf("%s.k%02d*", cfg.Prefix, d))
			}
		}
		got := make(map[string]float64, cfg.Keys)
		var stored int64
		for _, g := range globs {
			var list []struct {
				Key    string  `json:"key"`
				Value  float64 `json:"value"`
				Points int64   `json:"points"`
			}
			u := "http://" + cfg.Query + "/api/v1/series?match=" + url.QueryEscape(g)
			if err := getJSON(ctx, u, &list); err != nil {
				return nil, 0, err
			}
			for _, s := range list {
				got[s.Key] = s.Value
				stored += s.Points
			}
		}
		return got, stored, nil
	case "prometheus":
		sel := fmt.Sprintf(`{__name__=~"%s\\..*"}`, regexpQuote(cfg.Prefix))
		// An instant query with a one-day step looks back a day (VictoriaMetrics).
		vals, err := promQuery(ctx, cfg.Query, sel)
		if err != nil {
			return nil, 0, err
		}
		got := make(map[string]float64, len(vals))
		for _, r := range vals {
			got[r.name] = r.v
		}
		counts, err := promQuery(ctx, cfg.Query, "sum(count_over_time("+sel+"[1d]))")
		if err != nil {
			return nil, 0, err
		}
		var stored int64
		for _, r := range counts {
			stored += int64(r.v)
		}
		return got, stored, nil
	}
	return nil, 0, fmt.Errorf("unknown read-back API %q (want sonde or prometheus)", cfg.API)
}

func regexpQuote(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' || c == '\\' || c == '"' || c == '*' || c == '+' || c == '?' || c == '(' || c == ')' || c == '[' || c == ']' || c == '{' || c == '}' || c == '|' || c == '^' || c == '$' {
			out = append(out, '\\', '\\', c)
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

type promSample struct {
	name string
	v    float64
}

func promQuery(ctx context.Context, addr, q string) ([]promSample, error) {
	u := "http://" + addr + "/api/v1/query?step=1d&time=" + strconv.FormatInt(time.Now().Unix(), 10) + "&query=" + url.QueryEscape(q)
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := getJSON(ctx, u, &resp); err != nil {
		return nil, err
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, resp.Error)
	}
	out := make([]promSample, 0, len(resp.Data.Result))
	for _, r := range resp.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %q: %w", q, s, err)
		}
		out = append(out, promSample{name: r.Metric["__name__"], v: v})
	}
	return out, nil
}

func getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("get %s: %s: %s", u, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", u, err)
	}
	return nil
}
