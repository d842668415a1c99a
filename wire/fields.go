package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// A control payload is decoded by walking its map, not by a reflecting
// unmarshaler, so that the rules of docs/protocol.md §4 hold exactly and
// in both encodings: keys match exactly (encoding/json folds case), a key
// may appear once, integers are non-negative (MessagePack libraries write
// small positive numbers in signed formats too, which are accepted), and
// the errors name the field and what was expected, in plain words.

// fieldKind is what a control field holds.
type fieldKind uint8

const (
	uintField fieldKind = iota
	stringField
	boolField
)

// field is one known key of a control payload and where its value goes.
type field struct {
	name string
	kind fieldKind
	u    *uint64
	s    *string
	b    *bool
	set  bool // the key was present
}

func uintOf(name string, p *uint64) *field { return &field{name: name, kind: uintField, u: p} }
func stringOf(name string, p *string) *field {
	return &field{name: name, kind: stringField, s: p}
}
func boolOf(name string, p *bool) *field { return &field{name: name, kind: boolField, b: p} }

// decodeFields decodes the map in b into fs; keys not in fs are skipped.
// Its errors wrap ErrBadPayload.
func decodeFields(enc Encoding, b []byte, fs ...*field) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrBadPayload)
	}
	var err error
	switch enc {
	case JSON:
		err = decodeJSONFields(b, fs)
	case MsgPack:
		// Check the declared lengths first: the decoder trusts them.
		if err = checkMsgPack(b); err == nil {
			err = decodeMsgPackFields(b, fs)
		}
	default:
		err = fmt.Errorf("reserved encoding %d", uint8(enc))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return nil
}

// claim returns the field named key, or nil for an unknown key, and
// fails on a key seen before.
func claim(fs []*field, seen map[string]bool, key string) (*field, error) {
	if seen[key] {
		return nil, fmt.Errorf("key %q appears more than once", key)
	}
	seen[key] = true
	for _, f := range fs {
		if f.name == key {
			f.set = true
			return f, nil
		}
	}
	return nil, nil
}

func (f *field) want() string {
	switch f.kind {
	case uintField:
		return "a non-negative integer"
	case stringField:
		return "a string"
	default:
		return "true or false"
	}
}

func decodeJSONFields(b []byte, fs []*field) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("want a JSON object")
	}
	seen := make(map[string]bool, len(fs))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("malformed JSON object")
		}
		key, _ := tok.(string) // an object's keys are strings
		f, err := claim(fs, seen, key)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("malformed value of %q", key)
		}
		if f != nil {
			if err := f.setJSON(raw); err != nil {
				return err
			}
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return errors.New("malformed JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more after the JSON object")
	}
	return nil
}

func (f *field) setJSON(raw json.RawMessage) error {
	bad := fmt.Errorf("%q: want %s, got %s", f.name, f.want(), truncate(raw))
	switch f.kind {
	case uintField:
		// A plain integer literal: no sign, fraction or exponent.
		for _, c := range raw {
			if c < '0' || c > '9' {
				return bad
			}
		}
		v, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return fmt.Errorf("%q: want a non-negative integer below 2^64, got %s", f.name, truncate(raw))
		}
		*f.u = v
	case stringField:
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, f.s) != nil {
			return bad
		}
	case boolField:
		switch string(raw) {
		case "true":
			*f.b = true
		case "false":
			*f.b = false
		default:
			return bad
		}
	}
	return nil
}

// truncate quotes at most 32 bytes of a bad value for an error message.
func truncate(raw []byte) string {
	if len(raw) > 32 {
		return string(raw[:32]) + "..."
	}
	return string(raw)
}

// decodeMsgPackFields reads the map in b, which checkMsgPack has checked.
// It peeks at each code before decoding and hands the library only what
// checkMsgPack measured the same way: the library's DecodeMapLen and
// DecodeInterface read an extension as a wrapper around the value in its
// body, whose declared lengths checkMsgPack (rightly) skipped as opaque
// bytes; a 28-byte payload of an ext around a map around a map32 claiming
// 3 billion entries had the library build a map of that size.
func decodeMsgPackFields(b []byte, fs []*field) error {
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	c, err := dec.PeekCode()
	if err != nil || !isMsgPackMap(c) {
		return errors.New("want a MessagePack map")
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return errors.New("want a MessagePack map")
	}
	seen := make(map[string]bool, len(fs))
	for range n {
		c, err := dec.PeekCode()
		if err != nil || !msgpcode.IsString(c) {
			return errors.New("want string keys in the MessagePack map")
		}
		key, err := dec.DecodeString()
		if err != nil {
			return errors.New("want string keys in the MessagePack map")
		}
		f, err := claim(fs, seen, key)
		if err != nil {
			return err
		}
		if f == nil {
			if err := dec.Skip(); err != nil {
				return fmt.Errorf("malformed value of %q", key)
			}
			continue
		}
		if c, err := dec.PeekCode(); err == nil && !isMsgPackScalar(c) {
			return fmt.Errorf("%q: want %s, got %s", f.name, f.want(), describeCode(c))
		}
		v, err := dec.DecodeInterface()
		if err != nil {
			return fmt.Errorf("malformed value of %q", key)
		}
		if err := f.setMsgPack(v); err != nil {
			return err
		}
	}
	return nil
}

func isMsgPackMap(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func isMsgPackArray(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

// isMsgPackScalar: no control field holds a map, an array or an extension.
func isMsgPackScalar(c byte) bool {
	return !isMsgPackMap(c) && !isMsgPackArray(c) && !msgpcode.IsExt(c)
}

// describeCode names what a value that is not a scalar is.
func describeCode(c byte) string {
	switch {
	case isMsgPackMap(c):
		return "a map"
	case isMsgPackArray(c):
		return "an array"
	}
	return "an extension"
}

func (f *field) setMsgPack(v any) error {
	bad := fmt.Errorf("%q: want %s, got %s", f.name, f.want(), describe(v))
	switch f.kind {
	case uintField:
		u, ok := nonNegative(v)
		if !ok {
			return bad
		}
		*f.u = u
	case stringField:
		s, ok := v.(string)
		if !ok {
			return bad
		}
		*f.s = s
	case boolField:
		x, ok := v.(bool)
		if !ok {
			return bad
		}
		*f.b = x
	}
	return nil
}

// nonNegative accepts an integer of any MessagePack format whose value is
// not negative.
func nonNegative(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return signed(int64(x))
	case int16:
		return signed(int64(x))
	case int32:
		return signed(int64(x))
	case int64:
		return signed(x)
	}
	return 0, false
}

func signed(x int64) (uint64, bool) {
	if x < 0 {
		return 0, false
	}
	return uint64(x), true
}

// describe names a decoded MessagePack value for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return "a string"
	case bool:
		return strconv.FormatBool(x)
	case float32, float64:
		return "a float"
	case int8, int16, int32, int64:
		return fmt.Sprintf("%d", x)
	case uint8, uint16, uint32, uint64:
		return fmt.Sprintf("%d", x)
	case []byte:
		return "binary data"
	}
	return "another type"
}
