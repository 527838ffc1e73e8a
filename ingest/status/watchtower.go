package status

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sonde-metrics/sonde/engine/sample"
	"github.com/sonde-metrics/sonde/ingest/internal/text"
)

// watchtower's bodies (docs/watchtower.md). Its server reads them with
// Python's json and takes what it knows: unknown fields are ignored
// here too, and a missing field is named the way watchtower names it
// ("no nextIn provided"), since its clients show that hint.

// WatchtowerPulse is a pulse as watchtower's clients send it: the alert
// type and target are theirs, mapped onto a configured channel by the
// caller.
type WatchtowerPulse struct {
	Pulse
	AlertType, AlertTarget string
}

type wtPulseJSON struct {
	Service     *string      `json:"service"`
	NextIn      *json.Number `json:"nextIn"`
	AlertType   *string      `json:"alertType"`
	AlertTarget *string      `json:"alertTarget"`
}

// ParseWatchtowerPulse parses POST /heartbeat: {service, nextIn (s),
// alertType, alertTarget}, all required, as watchtower wants them.
func ParseWatchtowerPulse(body []byte) (WatchtowerPulse, error) {
	var r wtPulseJSON
	if err := decodeLoose(body, &r); err != nil {
		return WatchtowerPulse{}, err
	}
	switch {
	case r.Service == nil:
		return WatchtowerPulse{}, text.Syntaxf("no service provided")
	case r.NextIn == nil:
		return WatchtowerPulse{}, text.Syntaxf("no nextIn provided")
	case r.AlertTarget == nil:
		return WatchtowerPulse{}, text.Syntaxf("no alert target provided")
	case r.AlertType == nil:
		return WatchtowerPulse{}, text.Syntaxf("no alert type provided")
	}
	if err := checkService(*r.Service); err != nil {
		return WatchtowerPulse{}, err
	}
	s, err := strconv.ParseFloat(r.NextIn.String(), 64)
	if err != nil || math.IsNaN(s) || s < MinNextIn.Seconds() || s > MaxNextIn.Seconds() {
		return WatchtowerPulse{}, text.Syntaxf("nextIn %s: want seconds from %g to %g", text.Clip([]byte(r.NextIn.String())), MinNextIn.Seconds(), MaxNextIn.Seconds())
	}
	for _, v := range []string{*r.AlertType, *r.AlertTarget} {
		if len(v) > 256 || !validText(v) {
			return WatchtowerPulse{}, text.Syntaxf("alertType and alertTarget: want text of at most 256 bytes")
		}
	}
	return WatchtowerPulse{Pulse: Pulse{Service: *r.Service, NextIn: time.Duration(s * float64(time.Second))},
		AlertType: *r.AlertType, AlertTarget: *r.AlertTarget}, nil
}

// ParseWatchtowerCancel parses DELETE /heartbeat: {service}.
func ParseWatchtowerCancel(body []byte) (string, error) {
	var r struct {
		Service *string `json:"service"`
	}
	if err := decodeLoose(body, &r); err != nil {
		return "", err
	}
	if r.Service == nil {
		return "", text.Syntaxf("no service provided")
	}
	if err := checkService(*r.Service); err != nil {
		return "", err
	}
	return *r.Service, nil
}

// ParseWatchtowerEvent parses POST /event: {service, message, level
// (default 0), alert}. The time is the server's, as in watchtower.
func ParseWatchtowerEvent(body []byte) (sample.Event, error) {
	var r struct {
		Service *string      `json:"service"`
		Message *string      `json:"message"`
		Level   *json.Number `json:"level"`
		Alert   bool         `json:"alert"`
	}
	if err := decodeLoose(body, &r); err != nil {
		return sample.Event{}, err
	}
	if r.Service == nil {
		return sample.Event{}, text.Syntaxf("no service provided")
	}
	if r.Message == nil {
		return sample.Event{}, text.Syntaxf("no message provided")
	}
	ev := eventJSON{Service: r.Service, Level: r.Level, Message: *r.Message, Alert: r.Alert}
	return ev.event()
}

// decodeLoose decodes one JSON object into v, ignoring unknown fields.
func decodeLoose(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	return atEnd(dec)
}

func validText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}
