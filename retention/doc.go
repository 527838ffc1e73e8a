// Package retention will hold the retention policies and the background
// job that downsamples and expires history (issue 5). Until then history
// is kept without expiry; see docs/semantics.md.
package retention
