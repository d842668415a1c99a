package wire

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Error codes carried in the "code" field of an Error packet.
const (
	CodeProtocolError    = "protocol_error"
	CodeUnknownType      = "unknown_type"
	CodeBadPayload       = "bad_payload"
	CodeFrameTooLarge    = "frame_too_large"
	CodeSessionTakenOver = "session_taken_over"
)

// TakeoverMessage is the exact text of the Error packet sent to a connection
// whose session was taken over, as the original gateway's clients expect.
const TakeoverMessage = "new connection from another location, closing this one"

// Goodbye codes. Receivers must tolerate codes not listed here.
const (
	GoodbyeNormal           = "normal"
	GoodbyeSessionTakenOver = "session_taken_over"
	GoodbyeServerShutdown   = "server_shutdown"
	GoodbyeSlowConsumer     = "slow_consumer"
	GoodbyeProtocolError    = "protocol_error"
	GoodbyeIdleTimeout      = "idle_timeout"
	GoodbyeAdmin            = "admin"
	// GoodbyeBackendStalled: the backend consuming the session did not
	// ack for the server's pause timeout while the session was paused.
	GoodbyeBackendStalled = "backend_stalled"
)

// GoodbyeReconnect is the default reconnect advice for each known Goodbye code.
// An unknown code advises against reconnecting.
func GoodbyeReconnect(code string) bool {
	switch code {
	case GoodbyeServerShutdown, GoodbyeSlowConsumer, GoodbyeIdleTimeout, GoodbyeBackendStalled:
		return true
	default:
		return false
	}
}

// ErrorPayload is the payload of an Error packet.
type ErrorPayload struct {
	Error   string `json:"error" msgpack:"error"`
	PktType int    `json:"pkt_type" msgpack:"pkt_type"`
	Code    string `json:"code" msgpack:"code"`
}

// FlushPayload is the payload of Flush and FlushAck packets.
type FlushPayload struct {
	Seq uint64 `json:"seq" msgpack:"seq"`
}

// GoodbyePayload is the payload of a Goodbye packet.
type GoodbyePayload struct {
	Code      string `json:"code" msgpack:"code"`
	Reason    string `json:"reason" msgpack:"reason"`
	Reconnect bool   `json:"reconnect" msgpack:"reconnect"`
}

// PingPayload is the payload of Ping and Pong packets.
type PingPayload struct {
	Nonce uint64 `json:"nonce" msgpack:"nonce"`
}

// Marshal encodes a control payload in enc.
func Marshal(enc Encoding, v any) ([]byte, error) {
	switch enc {
	case JSON:
		return json.Marshal(v)
	case MsgPack:
		return msgpack.Marshal(v)
	default:
		return nil, fmt.Errorf("wire: cannot marshal in %s encoding", enc)
	}
}

// ErrBadPayload wraps every control-payload decoding failure.
var ErrBadPayload = errors.New("wire: bad control payload")

// DecodeFlush decodes a Flush or FlushAck payload. The seq field is required.
func DecodeFlush(enc Encoding, b []byte) (FlushPayload, error) {
	var v FlushPayload
	seq := uintOf("seq", &v.Seq)
	if err := decodeFields(enc, b, seq); err != nil {
		return FlushPayload{}, err
	}
	if err := required(seq); err != nil {
		return FlushPayload{}, err
	}
	return v, nil
}

// DecodePing decodes a Ping or Pong payload. The nonce field is required.
func DecodePing(enc Encoding, b []byte) (PingPayload, error) {
	var v PingPayload
	nonce := uintOf("nonce", &v.Nonce)
	if err := decodeFields(enc, b, nonce); err != nil {
		return PingPayload{}, err
	}
	if err := required(nonce); err != nil {
		return PingPayload{}, err
	}
	return v, nil
}

// DecodeGoodbye decodes a Goodbye payload. Every field is optional.
func DecodeGoodbye(enc Encoding, b []byte) (GoodbyePayload, error) {
	var v GoodbyePayload
	err := decodeFields(enc, b, stringOf("code", &v.Code), stringOf("reason", &v.Reason), boolOf("reconnect", &v.Reconnect))
	if err != nil {
		return GoodbyePayload{}, err
	}
	return v, nil
}

// DecodeError decodes an Error payload. Every field is optional; the server
// never decodes inbound Errors (they are opaque application messages), but
// clients use this to read the server's Errors.
func DecodeError(enc Encoding, b []byte) (ErrorPayload, error) {
	var v ErrorPayload
	var pktType uint64
	err := decodeFields(enc, b, stringOf("error", &v.Error), uintOf("pkt_type", &pktType), stringOf("code", &v.Code))
	if err != nil {
		return ErrorPayload{}, err
	}
	if pktType > 255 {
		return ErrorPayload{}, fmt.Errorf("%w: \"pkt_type\": want a packet type, 0 to 255, got %d", ErrBadPayload, pktType)
	}
	v.PktType = int(pktType)
	return v, nil
}

// checkMsgPack walks the first MessagePack value in b, without recursion,
// and fails unless it is complete: every str, bin and ext length, and every
// array and map count, fits in the bytes that are left. Bytes after the
// value are not looked at (msgpack.Unmarshal ignores them too).
func checkMsgPack(b []byte) error {
	off, pending := 0, 1 // pending: values still to read
	for pending > 0 {
		if off >= len(b) {
			return errors.New("msgpack: unexpected end of payload")
		}
		c := b[off]
		off++
		pending--
		// be reads an n-byte big-endian length at off, capped at len(b)+1.
		be := func(n int) (int, bool) {
			if len(b)-off < n {
				return 0, false
			}
			var v uint64
			for _, x := range b[off : off+n] {
				v = v<<8 | uint64(x)
			}
			off += n
			return int(min(v, uint64(len(b))+1)), true
		}
		var skip, count int // bytes to skip; values to add to pending
		ok := true
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixint, nil, bool
		case c <= 0x8f: // fixmap
			count = 2 * int(c&0x0f)
		case c <= 0x9f: // fixarray
			count = int(c & 0x0f)
		case c <= 0xbf: // fixstr
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9: // bin8, str8
			skip, ok = be(1)
		case c == 0xc5 || c == 0xda: // bin16, str16
			skip, ok = be(2)
		case c == 0xc6 || c == 0xdb: // bin32, str32
			skip, ok = be(4)
		case c >= 0xc7 && c <= 0xc9: // ext8, ext16, ext32: length, type, data
			skip, ok = be(1 << (c - 0xc7))
			skip++
		case c == 0xca: // float32
			skip = 4
		case c == 0xcb: // float64
			skip = 8
		case c >= 0xcc && c <= 0xcf: // uint8..uint64
			skip = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3: // int8..int64
			skip = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8: // fixext1..fixext16: type, data
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc: // array16
			count, ok = be(2)
		case c == 0xdd: // array32
			count, ok = be(4)
		case c == 0xde: // map16
			count, ok = be(2)
			count *= 2
		case c == 0xdf: // map32
			count, ok = be(4)
			count *= 2
		default:
			return fmt.Errorf("msgpack: invalid code 0x%02x", c)
		}
		// Every value still to read takes at least one byte.
		if !ok || skip+count+pending > len(b)-off {
			return fmt.Errorf("msgpack: code 0x%02x at offset %d declares more than the payload holds", c, off)
		}
		off += skip
		pending += count
	}
	return nil
}
