package wire

import "fmt"

// ALPNResume is the TLS application protocol a client offers to opt in to
// the resume extension (docs/protocol.md §15). When the server selects it,
// the client's first frame is Resume, the server writes nothing after the
// SessionID until its Resumed, and the Data of both directions is numbered
// and acknowledged. A client that does not offer it speaks plain v1, byte
// for byte.
const ALPNResume = "tlsgate-resume/1"

// ResumePayload is the payload of Resume (client → server): the epoch the
// client was in (empty for a fresh start) and the number of the last server
// Data it has processed (0 for none).
type ResumePayload struct {
	Epoch string `json:"epoch" msgpack:"epoch"`
	Seq   uint64 `json:"seq" msgpack:"seq"`
}

// ResumedPayload is the payload of Resumed (server → client): the epoch
// now in force, the number of the last client Data the server has accepted
// in it (the client resends everything after it), and whether the server
// resumed the client's epoch with nothing missing.
type ResumedPayload struct {
	Epoch   string `json:"epoch" msgpack:"epoch"`
	Seq     uint64 `json:"seq" msgpack:"seq"`
	Resumed bool   `json:"resumed" msgpack:"resumed"`
}

// AckPayload is the payload of Ack (both directions): every Data through
// Seq is processed.
type AckPayload struct {
	Seq uint64 `json:"seq" msgpack:"seq"`
}

// MaxEpochLen bounds a Resume's epoch: the server's epochs are 16 hex
// digits, and anything much longer is not one of them.
const MaxEpochLen = 64

// DecodeResume decodes a Resume payload. Both fields are required.
func DecodeResume(enc Encoding, b []byte) (ResumePayload, error) {
	var v ResumePayload
	epoch, seq := stringOf("epoch", &v.Epoch), uintOf("seq", &v.Seq)
	if err := decodeFields(enc, b, epoch, seq); err != nil {
		return ResumePayload{}, err
	}
	if err := required(epoch, seq); err != nil {
		return ResumePayload{}, err
	}
	if len(v.Epoch) > MaxEpochLen {
		return ResumePayload{}, fmt.Errorf("%w: \"epoch\": want at most %d bytes, got %d", ErrBadPayload, MaxEpochLen, len(v.Epoch))
	}
	return v, nil
}

// DecodeResumed decodes a Resumed payload. Every field is required.
func DecodeResumed(enc Encoding, b []byte) (ResumedPayload, error) {
	var v ResumedPayload
	epoch, seq, resumed := stringOf("epoch", &v.Epoch), uintOf("seq", &v.Seq), boolOf("resumed", &v.Resumed)
	if err := decodeFields(enc, b, epoch, seq, resumed); err != nil {
		return ResumedPayload{}, err
	}
	if err := required(epoch, seq, resumed); err != nil {
		return ResumedPayload{}, err
	}
	return v, nil
}

// DecodeAck decodes an Ack payload. The seq field is required.
func DecodeAck(enc Encoding, b []byte) (AckPayload, error) {
	var v AckPayload
	seq := uintOf("seq", &v.Seq)
	if err := decodeFields(enc, b, seq); err != nil {
		return AckPayload{}, err
	}
	if err := required(seq); err != nil {
		return AckPayload{}, err
	}
	return v, nil
}

// required fails on the first of fs that the payload did not set.
func required(fs ...*field) error {
	for _, f := range fs {
		if !f.set {
			return fmt.Errorf("%w: missing field %q", ErrBadPayload, f.name)
		}
	}
	return nil
}
