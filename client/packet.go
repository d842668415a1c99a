package client

import (
	"errors"
	"fmt"

	"github.com/tlsgate/tlsgate/wire"
)

// ErrInvalidPacket is wrapped by every error about a packet that cannot be
// sent.
var ErrInvalidPacket = errors.New("client: invalid packet")

// Packet is an application packet: Data, or Error used as a message as the
// original gateway's clients do. The zero Type is wire.TypeError; use Data
// to build a Data packet.
type Packet struct {
	Type     wire.Type
	Encoding wire.Encoding
	Payload  []byte
}

// Data returns a JSON-encoded Data packet carrying payload.
func Data(payload []byte) Packet {
	return Packet{Type: wire.TypeData, Encoding: wire.JSON, Payload: payload}
}

// ErrorPayload decodes the payload of an Error packet, such as the one
// announcing a takeover (code wire.CodeSessionTakenOver).
func (p Packet) ErrorPayload() (wire.ErrorPayload, error) {
	if p.Type != wire.TypeError {
		return wire.ErrorPayload{}, fmt.Errorf("%w: %s packet is not an error", ErrInvalidPacket, p.Type)
	}
	return wire.DecodeError(p.Encoding, p.Payload)
}

func (p Packet) validate() error {
	switch {
	case p.Type != wire.TypeData && p.Type != wire.TypeError:
		return fmt.Errorf("%w: type %s cannot be sent by the application", ErrInvalidPacket, p.Type)
	case !p.Encoding.Valid():
		return fmt.Errorf("%w: encoding %s", ErrInvalidPacket, p.Encoding)
	case len(p.Payload) > wire.MaxPayload:
		return fmt.Errorf("%w: payload of %d bytes, over the maximum of %d", ErrInvalidPacket, len(p.Payload), wire.MaxPayload)
	}
	return nil
}

// frame encodes p into a fresh slice, so the caller may reuse its payload.
func (p Packet) frame() []byte {
	return wire.AppendFrame(make([]byte, 0, wire.HeaderLen+len(p.Payload)), p.Type, p.Encoding, p.Payload)
}
