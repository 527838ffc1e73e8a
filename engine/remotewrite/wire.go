package remotewrite

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// The Prometheus remote_write 1.0 message, encoded with protowire (the
// protobuf module's wire layer) rather than generated code: only these
// fields are ever written.
//
//	WriteRequest { repeated TimeSeries timeseries = 1; }
//	TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//	Label        { string name = 1; string value = 2; }
//	Sample       { double value = 1; int64 timestamp = 2; }
//
// Each point goes as a TimeSeries of one sample, as Prometheus' own queue
// manager sends them: a request keeps the points' order, and snappy
// takes the repeated labels away.

// appendLabels encodes labels (sorted by name, as the protocol asks) as
// the repeated label fields of a TimeSeries.
func appendLabels(dst []byte, labels []label) []byte {
	for _, l := range labels {
		n := protowire.SizeTag(1) + protowire.SizeBytes(len(l.name)) + protowire.SizeTag(2) + protowire.SizeBytes(len(l.value))
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(n))
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, l.name)
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendString(dst, l.value)
	}
	return dst
}

// sampleSize is the encoded size of a Sample message.
func sampleSize(ts int64) int {
	return protowire.SizeTag(1) + 8 + protowire.SizeTag(2) + protowire.SizeVarint(uint64(ts))
}

// appendSeriesStart appends the head of a TimeSeries field of a
// WriteRequest: its length (the labels and samples bytes) and the
// pre-encoded labels; appendSample then appends each of its samples
// bytes.
func appendSeriesStart(dst, labels []byte, samples int) []byte {
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(len(labels)+samples))
	return append(dst, labels...)
}

// appendSample appends one samples field of a TimeSeries.
func appendSample(dst []byte, ts int64, v float64) []byte {
	dst = protowire.AppendTag(dst, 2, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(sampleSize(ts)))
	dst = protowire.AppendTag(dst, 1, protowire.Fixed64Type)
	dst = protowire.AppendFixed64(dst, math.Float64bits(v))
	dst = protowire.AppendTag(dst, 2, protowire.VarintType)
	return protowire.AppendVarint(dst, uint64(ts))
}
