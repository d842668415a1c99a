// Package wire holds tlsgate's wire protocol v1: the raw handshake, the
// 4-byte frame header, packet types and encodings, and the control payloads.
// It is shared by the server and the Go client and is specified for third
// parties in docs/protocol.md.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	// Version is the protocol version carried by the handshake and every frame.
	Version = 0x01
	// HeaderLen is the size of a frame header.
	HeaderLen = 4
	// MaxPayload is the largest payload a frame may ever carry, so that a
	// whole frame fits in 65,535 bytes. A server may configure less.
	MaxPayload = 65531
)

// Encoding is the payload encoding, carried in bits 7–6 of header byte 1.
type Encoding uint8

const (
	// JSON payloads (encoding 0).
	JSON Encoding = 0
	// MsgPack payloads: MessagePack (encoding 1).
	MsgPack Encoding = 1
)

// Valid reports whether e is a defined (non-reserved) encoding.
func (e Encoding) Valid() bool { return e == JSON || e == MsgPack }

func (e Encoding) String() string {
	switch e {
	case JSON:
		return "json"
	case MsgPack:
		return "msgpack"
	default:
		return fmt.Sprintf("reserved(%d)", uint8(e))
	}
}

// Type is the packet type, carried in bits 5–0 of header byte 1.
type Type uint8

// Packet types of protocol v1.
const (
	TypeError    Type = 0
	TypeData     Type = 1
	TypeFlush    Type = 2
	TypeFlushAck Type = 3
	TypeGoodbye  Type = 4
	TypePing     Type = 5
	TypePong     Type = 6
	// The resume extension (see ALPNResume): on a resumable connection only.
	TypeResume  Type = 7
	TypeResumed Type = 8
	TypeAck     Type = 9
)

// Known reports whether t is a packet type defined by protocol v1 or its
// resume extension.
func (t Type) Known() bool { return t <= TypeAck }

func (t Type) String() string {
	switch t {
	case TypeError:
		return "error"
	case TypeData:
		return "data"
	case TypeFlush:
		return "flush"
	case TypeFlushAck:
		return "flush_ack"
	case TypeGoodbye:
		return "goodbye"
	case TypePing:
		return "ping"
	case TypePong:
		return "pong"
	case TypeResume:
		return "resume"
	case TypeResumed:
		return "resumed"
	case TypeAck:
		return "ack"
	default:
		return fmt.Sprintf("unknown(%d)", uint8(t))
	}
}

// Frame is one decoded frame.
type Frame struct {
	Type     Type
	Encoding Encoding
	Payload  []byte
}

// Len is the frame's size on the wire.
func (f Frame) Len() int { return HeaderLen + len(f.Payload) }

// AppendFrame appends the encoded frame to dst. The caller guarantees that
// the payload is at most MaxPayload bytes and the encoding and type fit their
// bits; the server and client check this before a packet is queued.
func AppendFrame(dst []byte, typ Type, enc Encoding, payload []byte) []byte {
	h := Header(typ, enc, len(payload))
	return append(append(dst, h[:]...), payload...)
}

// Header encodes the header of a frame whose payload is n bytes long.
func Header(typ Type, enc Encoding, n int) [HeaderLen]byte {
	return [HeaderLen]byte{Version, byte(enc)<<6 | byte(typ)&0x3f, byte(n >> 8), byte(n)}
}

// FramingError means the byte stream can no longer be trusted: a bad
// version or a reserved encoding. The answer is Error protocol_error,
// then a graceful close.
type FramingError struct {
	Version  byte
	Encoding Encoding
}

func (e *FramingError) Error() string {
	if e.Version != Version {
		return fmt.Sprintf("wire: bad frame version 0x%02x (want 0x%02x)", e.Version, Version)
	}
	return fmt.Sprintf("wire: reserved encoding %d", uint8(e.Encoding))
}

// TooLargeError means a frame declared a payload longer than the maximum.
// The answer is Error frame_too_large, then a graceful close.
type TooLargeError struct {
	Type     Type
	Encoding Encoding
	Len      int
	Max      int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("wire: %s frame declares %d payload bytes, over the maximum of %d", e.Type, e.Len, e.Max)
}

// ErrTruncated is returned when the stream ends inside a frame.
var ErrTruncated = errors.New("wire: stream ended inside a frame")

// Reader decodes frames from a buffered stream.
type Reader struct {
	br      Source
	max     int
	scratch []byte // ReadFrameBorrowed's payloads that do not fit br's buffer
}

// NewReader returns a Reader that refuses payloads over maxPayload
// (clamped to MaxPayload). Frames that fit br's buffer (Size) are decoded
// in place: give br MaxReadBuffer (a ReadBuffer's default maximum, or
// bufio.NewReaderSize with 64 KiB) for the fast path on every frame.
func NewReader(br Source, maxPayload int) *Reader {
	if maxPayload <= 0 || maxPayload > MaxPayload {
		maxPayload = MaxPayload
	}
	return &Reader{br: br, max: maxPayload}
}

// ReadFrame reads the next frame. The payload is a fresh slice the caller
// owns. It returns io.EOF only at a frame boundary, ErrTruncated when the
// stream ends inside a frame, *FramingError or *TooLargeError for bad
// headers, and any other error from the underlying reader as it is.
func (r *Reader) ReadFrame() (Frame, error) { return r.read(false) }

// ReadFrameBorrowed is ReadFrame without the copy: the payload aliases the
// Reader's buffers and is valid only until the next call. It allocates
// nothing in steady state.
func (r *Reader) ReadFrameBorrowed() (Frame, error) { return r.read(true) }

func (r *Reader) read(borrow bool) (Frame, error) {
	h, err := r.br.Peek(HeaderLen)
	if err != nil {
		if len(h) > 0 {
			_, _ = r.br.Discard(len(h))
			return Frame{}, truncated(err)
		}
		return Frame{}, err
	}
	f := Frame{Encoding: Encoding(h[1] >> 6), Type: Type(h[1] & 0x3f)}
	if h[0] != Version || !f.Encoding.Valid() {
		ferr := &FramingError{Version: h[0], Encoding: f.Encoding}
		_, _ = r.br.Discard(HeaderLen) // the bad header is consumed, as a good one is
		return Frame{}, ferr
	}
	n := int(binary.BigEndian.Uint16(h[2:]))
	if n > r.max {
		_, _ = r.br.Discard(HeaderLen)
		return Frame{}, &TooLargeError{Type: f.Type, Encoding: f.Encoding, Len: n, Max: r.max}
	}
	if total := HeaderLen + n; total <= r.br.Size() {
		// The whole frame fits the buffer: decode it in place.
		b, err := r.br.Peek(total)
		if err != nil {
			_, _ = r.br.Discard(len(b)) // the truncated frame is gone
			return Frame{}, truncated(err)
		}
		f.Payload = b[HeaderLen:total:total] // capped: an append cannot reach the next frame
		if !borrow {
			f.Payload = bytes.Clone(f.Payload) // cheaper than a zeroed make and a ReadFull
		}
		_, _ = r.br.Discard(total)
		return f, nil
	}
	_, _ = r.br.Discard(HeaderLen)
	if borrow {
		if cap(r.scratch) < n {
			r.scratch = make([]byte, n)
		}
		f.Payload = r.scratch[:n:n]
	} else {
		f.Payload = make([]byte, n)
	}
	if _, err := io.ReadFull(r.br, f.Payload); err != nil {
		return Frame{}, truncated(err)
	}
	return f, nil
}

// truncated maps the end of the stream inside a frame to ErrTruncated.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}
