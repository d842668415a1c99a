package wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/tlsgate/tlsgate/wire"
)

// Encode a Data frame, then decode it back from a byte stream.
func ExampleAppendFrame() {
	frame := wire.AppendFrame(nil, wire.TypeData, wire.JSON, []byte(`"hello"`))
	fmt.Printf("% x\n", frame)

	r := wire.NewReader(bufio.NewReaderSize(bytes.NewReader(frame), 64<<10), wire.MaxPayload)
	f, err := r.ReadFrame()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s %s, %d bytes on the wire\n", f.Type, f.Encoding, f.Payload, f.Len())
	_, err = r.ReadFrame()
	fmt.Println("then:", errors.Is(err, io.EOF))
	// Output:
	// 01 01 00 07 22 68 65 6c 6c 6f 22
	// data json "hello", 11 bytes on the wire
	// then: true
}

// Encode a Flush payload in each encoding, and decode it back. (The
// MessagePack encoder writes a uint64 at its full width.)
func ExampleMarshal() {
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		b, err := wire.Marshal(enc, wire.FlushPayload{Seq: 7})
		if err != nil {
			log.Fatal(err)
		}
		p, err := wire.DecodeFlush(enc, b)
		if err != nil {
			log.Fatal(err)
		}
		if enc == wire.JSON {
			fmt.Printf("%-7s %s -> seq %d\n", enc, b, p.Seq)
		} else {
			fmt.Printf("%-7s % x -> seq %d\n", enc, b, p.Seq)
		}
	}
	// Output:
	// json    {"seq":7} -> seq 7
	// msgpack 81 a3 73 65 71 cf 00 00 00 00 00 00 00 07 -> seq 7
}

// A Goodbye payload, and the reconnect advice of its code; every field of
// a Goodbye is optional.
func ExampleDecodeGoodbye() {
	b, err := wire.Marshal(wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeServerShutdown, Reason: "restarting", Reconnect: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b))
	gb, err := wire.DecodeGoodbye(wire.JSON, b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(gb.Code, gb.Reason, gb.Reconnect, wire.GoodbyeReconnect(gb.Code))
	gb, err = wire.DecodeGoodbye(wire.JSON, []byte(`{}`))
	fmt.Printf("%q %v\n", gb.Code, err)
	// Output:
	// {"code":"server_shutdown","reason":"restarting","reconnect":true}
	// server_shutdown restarting true true
	// "" <nil>
}

// A Flush payload without its seq, or that is not JSON, does not decode:
// the error wraps ErrBadPayload, and a server answers Error bad_payload.
func ExampleDecodeFlush() {
	for _, payload := range []string{`{"seq":3}`, `{}`, `{`} {
		p, err := wire.DecodeFlush(wire.JSON, []byte(payload))
		fmt.Printf("%-9s seq=%d bad=%v\n", payload, p.Seq, errors.Is(err, wire.ErrBadPayload))
	}
	// Output:
	// {"seq":3} seq=3 bad=false
	// {}        seq=0 bad=true
	// {         seq=0 bad=true
}
