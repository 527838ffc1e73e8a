// Package bench will hold sonde-bench, the load generator that drives
// every ingest path and query over real sockets and reports throughput,
// latency and loss (issue 3). Until then the inner loops are measured by
// `go test -bench` (make bench); figures are in docs/benchmarks.md.
package bench
