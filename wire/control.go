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
)

// GoodbyeReconnect is the default reconnect advice for each known Goodbye code.
// An unknown code advises against reconnecting.
func GoodbyeReconnect(code string) bool {
	switch code {
	case GoodbyeServerShutdown, GoodbyeSlowConsumer, GoodbyeIdleTimeout:
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

func unmarshal(enc Encoding, b []byte, v any) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrBadPayload)
	}
	var err error
	switch enc {
	case JSON:
		err = json.Unmarshal(b, v)
	case MsgPack:
		err = msgpack.Unmarshal(b, v)
	default:
		err = fmt.Errorf("reserved encoding %d", uint8(enc))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return nil
}

// DecodeFlush decodes a Flush or FlushAck payload. The seq field is required.
func DecodeFlush(enc Encoding, b []byte) (FlushPayload, error) {
	var v struct {
		Seq *uint64 `json:"seq" msgpack:"seq"`
	}
	if err := unmarshal(enc, b, &v); err != nil {
		return FlushPayload{}, err
	}
	if v.Seq == nil {
		return FlushPayload{}, fmt.Errorf("%w: missing field \"seq\"", ErrBadPayload)
	}
	return FlushPayload{Seq: *v.Seq}, nil
}

// DecodePing decodes a Ping or Pong payload. The nonce field is required.
func DecodePing(enc Encoding, b []byte) (PingPayload, error) {
	var v struct {
		Nonce *uint64 `json:"nonce" msgpack:"nonce"`
	}
	if err := unmarshal(enc, b, &v); err != nil {
		return PingPayload{}, err
	}
	if v.Nonce == nil {
		return PingPayload{}, fmt.Errorf("%w: missing field \"nonce\"", ErrBadPayload)
	}
	return PingPayload{Nonce: *v.Nonce}, nil
}

// DecodeGoodbye decodes a Goodbye payload. Every field is optional.
func DecodeGoodbye(enc Encoding, b []byte) (GoodbyePayload, error) {
	var v GoodbyePayload
	err := unmarshal(enc, b, &v)
	return v, err
}

// DecodeError decodes an Error payload. Every field is optional; the server
// never decodes inbound Errors (they are opaque application messages), but
// clients use this to read the server's Errors.
func DecodeError(enc Encoding, b []byte) (ErrorPayload, error) {
	var v ErrorPayload
	err := unmarshal(enc, b, &v)
	return v, err
}
