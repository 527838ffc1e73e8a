package collectd

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// DataSource is one data source of a type.
type DataSource struct {
	Name string
	Type DSType
}

// TypesDB maps a type name to its data sources, as collectd's types.db
// does.
type TypesDB map[string][]DataSource

// ParseTypesDB parses a types.db file:
//
//	# comment
//	if_octets   rx:DERIVE:0:U, tx:DERIVE:0:U
//	ib_octets   rx:DERIVE:0:U tx:DERIVE:0:U
func ParseTypesDB(b []byte) (TypesDB, error) {
	db := TypesDB{}
	for n, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.IndexAny(line, " \t")
		if i < 0 {
			return nil, syntaxf("types.db line %d: a type without data sources", n+1)
		}
		name := string(line[:i])
		var dss []DataSource
		// Data sources are separated by commas, white space, or both.
		for _, spec := range strings.FieldsFunc(string(line[i+1:]), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			parts := strings.Split(spec, ":")
			if len(parts) != 4 || parts[0] == "" {
				return nil, syntaxf("types.db line %d: data source %q is not name:TYPE:min:max", n+1, text.Clip([]byte(spec)))
			}
			t, ok := parseDSType(parts[1])
			if !ok {
				return nil, syntaxf("types.db line %d: unknown data source type %q", n+1, text.Clip([]byte(parts[1])))
			}
			dss = append(dss, DataSource{Name: parts[0], Type: t})
		}
		db[name] = dss
	}
	return db, nil
}

// Builtin is the subset of collectd's types.db that Sonde knows without
// one: the types of the common host plugins (cpu, memory, load, df, disk,
// interface, processes, swap, ...) and the generic ones.
func Builtin() TypesDB {
	db, err := ParseTypesDB([]byte(builtinTypes))
	if err != nil {
		panic(fmt.Sprintf("collectd: the built-in types.db does not parse: %v", err))
	}
	return db
}

const builtinTypes = `
absolute        value:ABSOLUTE:0:U
bytes           value:GAUGE:0:U
connections     value:DERIVE:0:U
contextswitch   value:DERIVE:0:U
count           value:GAUGE:0:U
counter         value:COUNTER:U:U
cpu             value:DERIVE:0:U
current         value:GAUGE:U:U
delay           value:GAUGE:-1000000:1000000
derive          value:DERIVE:0:U
df              used:GAUGE:0:1125899906842623, free:GAUGE:0:1125899906842623
df_complex      value:GAUGE:0:U
disk_io_time    io_time:DERIVE:0:U, weighted_io_time:DERIVE:0:U
disk_merged     read:DERIVE:0:U, write:DERIVE:0:U
disk_octets     read:DERIVE:0:U, write:DERIVE:0:U
disk_ops        read:DERIVE:0:U, write:DERIVE:0:U
disk_time       read:DERIVE:0:U, write:DERIVE:0:U
duration        seconds:GAUGE:0:U
entropy         value:GAUGE:0:4294967295
fork_rate       value:DERIVE:0:U
frequency       value:GAUGE:0:U
gauge           value:GAUGE:U:U
http_requests   value:DERIVE:0:U
if_dropped      rx:DERIVE:0:U, tx:DERIVE:0:U
if_errors       rx:DERIVE:0:U, tx:DERIVE:0:U
if_octets       rx:DERIVE:0:U, tx:DERIVE:0:U
if_packets      rx:DERIVE:0:U, tx:DERIVE:0:U
irq             value:DERIVE:0:U
latency         value:GAUGE:0:U
load            shortterm:GAUGE:0:5000, midterm:GAUGE:0:5000, longterm:GAUGE:0:5000
memory          value:GAUGE:0:281474976710656
objects         value:GAUGE:0:U
operations      value:DERIVE:0:U
packets         value:DERIVE:0:U
percent         value:GAUGE:0:100.1
percent_bytes   value:GAUGE:0:100.1
power           value:GAUGE:U:U
ps_count        processes:GAUGE:0:1000000, threads:GAUGE:0:1000000
ps_state        value:GAUGE:0:65535
queue_length    value:GAUGE:0:U
records         value:GAUGE:0:U
requests        value:GAUGE:0:U
response_time   value:GAUGE:0:U
swap            value:GAUGE:0:1099511627776
swap_io         value:DERIVE:0:U
temperature     value:GAUGE:U:U
threads         value:GAUGE:0:U
time_offset     value:GAUGE:-1000000:1000000
timestamp       value:GAUGE:0:18446744073709551615
total_bytes     value:DERIVE:0:U
total_requests  value:DERIVE:0:U
uptime          value:GAUGE:0:4294967295
users           value:GAUGE:0:65535
vmpage_io       in:DERIVE:0:U, out:DERIVE:0:U
vmpage_number   value:GAUGE:0:4294967295
voltage         value:GAUGE:U:U
`
