package status

import (
	"bytes"
	"encoding/json"
	"errors"
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

// field decodes the field name of m into v; false when m has none.
func field(m map[string]json.RawMessage, name string, v any) (bool, error) {
	raw, ok := m[name]
	if !ok {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return true, text.Syntaxf("%s: want %s, not a JSON %s", name, typeWords(te.Type), te.Value)
		}
		return true, decodeError(err)
	}
	return true, nil
}

// fields decodes the named fields of m, in order, each into its place;
// a missing one is reported by the hint its name maps to.
type wtField struct {
	name, missing string
	v             any
}

func wtFields(body []byte, fs ...wtField) error {
	m, err := looseFields(body)
	if err != nil {
		return err
	}
	for _, f := range fs {
		ok, err := field(m, f.name, f.v)
		if err != nil {
			return err
		}
		if !ok && f.missing != "" {
			return text.Syntaxf("%s", f.missing)
		}
	}
	return nil
}

// ParseWatchtowerPulse parses POST /heartbeat: {service, nextIn (s),
// alertType, alertTarget}, all required, as watchtower wants them.
func ParseWatchtowerPulse(body []byte) (WatchtowerPulse, error) {
	var service, alertType, alertTarget string
	var nextIn json.Number
	err := wtFields(body, wtField{"service", "no service provided", &service}, wtField{"nextIn", "no nextIn provided", &nextIn},
		wtField{"alertTarget", "no alert target provided", &alertTarget}, wtField{"alertType", "no alert type provided", &alertType})
	if err != nil {
		return WatchtowerPulse{}, err
	}
	if err := checkService(service); err != nil {
		return WatchtowerPulse{}, err
	}
	s, err := strconv.ParseFloat(nextIn.String(), 64)
	if err != nil || math.IsNaN(s) || s < MinNextIn.Seconds() || s > MaxNextIn.Seconds() {
		return WatchtowerPulse{}, nextInError(nextIn.String())
	}
	for _, v := range []string{alertType, alertTarget} {
		if len(v) > 256 || !validText(v) {
			return WatchtowerPulse{}, text.Syntaxf("alertType and alertTarget: want text of at most 256 bytes")
		}
	}
	return WatchtowerPulse{Pulse: Pulse{Service: service, NextIn: time.Duration(s * float64(time.Second))},
		AlertType: alertType, AlertTarget: alertTarget}, nil
}

// ParseWatchtowerCancel parses DELETE /heartbeat: {service}.
func ParseWatchtowerCancel(body []byte) (string, error) {
	var service string
	if err := wtFields(body, wtField{"service", "no service provided", &service}); err != nil {
		return "", err
	}
	if err := checkService(service); err != nil {
		return "", err
	}
	return service, nil
}

// ParseWatchtowerEvent parses POST /event: {service, message, level
// (default 0), alert}. The time is the server's, as in watchtower.
func ParseWatchtowerEvent(body []byte) (sample.Event, error) {
	var service, message string
	var level *json.Number
	var alert bool
	err := wtFields(body, wtField{"service", "no service provided", &service}, wtField{"message", "no message provided", &message},
		wtField{"level", "", &level}, wtField{"alert", "", &alert})
	if err != nil {
		return sample.Event{}, err
	}
	ev := eventJSON{Service: &service, Level: level, Message: message, Alert: alert}
	return ev.event()
}

func validText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}
