package sample

import "errors"

// Client logs: processes that keep a TCP connection open to the logatron
// listener, name themselves, and send log lines and state settings
// (docs/semantics.md, "Client logs").

// MaxStateKey is the longest state key of a client, in bytes.
const MaxStateKey = 255

// ClientWrite is one line of a connected client: a log line (Set false,
// Text the message) or a state setting (Set true, Key = Text).
type ClientWrite struct {
	Set  bool
	Key  string
	Text string
}

// ClientLine is one log line of a client.
type ClientLine struct {
	// ID is the WAL index of its record.
	ID   uint64
	Time int64 // ms since the epoch
	Text string
}

// ClientInfo is what a client listing shows of one client.
type ClientInfo struct {
	Name      string
	Connected bool
	// ConnectedAt is when it last connected, DisconnectedAt when it last
	// disconnected (0 if never), LastLine when it last logged or set a
	// key (0 if never); ms since the epoch.
	ConnectedAt, DisconnectedAt, LastLine int64
	// Lines is how many log lines it wrote in all, Sets how many state
	// settings.
	Lines, Sets uint64
}

// Client is one client: its info, its state and its log, newest first.
type Client struct {
	ClientInfo
	State map[string]string
	Log   []ClientLine
}

// What a ClientEvent reports.
const (
	ClientLogged       = "log"
	ClientSetKey       = "set"
	ClientConnected    = "connect"
	ClientDisconnected = "disconnect"
	// ClientGap: the ring dropped lines after the reader's id, up to this one.
	ClientGap = "gap"
)

// ClientEvent is one entry of the client stream: a log line, a state
// setting (the newest of its key), a connect or a disconnect.
type ClientEvent struct {
	ID     uint64 // the WAL index of its record
	Time   int64
	Client string
	Kind   string // ClientLogged, ClientSetKey, ClientConnected, ClientDisconnected
	Key    string // ClientSetKey
	Text   string // the line, or the key's value
}

var (
	// ErrClientConnected refuses a client that names itself as one that
	// is connected already.
	ErrClientConnected = errors.New("a client of that name is connected")
	// ErrTooManyClients refuses a new client name while every client the
	// store keeps (Options.MaxClients) is connected.
	ErrTooManyClients = errors.New("client limit reached")
	// ErrTooManyKeys refuses a state key past a client's bound.
	ErrTooManyKeys = errors.New("state key limit reached")
)
