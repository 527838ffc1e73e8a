package sample

import "time"

// Agg folds the points of one archive step into one value.
type Agg uint8

// The aggregations.
const (
	Avg Agg = iota + 1
	Sum
	Min
	Max
	Last
)

func (a Agg) String() string {
	if a > Last {
		return ""
	}
	return [...]string{"", "avg", "sum", "min", "max", "last"}[a]
}

// Keep says how a series' history is kept: raw points for Raw, and
// folded by Agg into coarser Archives, finest first.
type Keep struct {
	Raw      time.Duration
	Archives []Archive
	Agg      Agg
}

// Archive is one coarser resolution of a history: a point per Step, kept
// for Keep.
type Archive struct {
	Step time.Duration
	Keep time.Duration
}
