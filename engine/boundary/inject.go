package boundary

// Marker makes [Inject] panic, in a binary built with the sondetest tag,
// when a client's input holds it. Followed by '.' and a boundary name
// ("sonde-test-panic.sse"), it aims at that boundary only, so that input
// crossing several boundaries (an SSE request is an HTTP request first)
// can reach the inner one.
const Marker = "sonde-test-panic"
