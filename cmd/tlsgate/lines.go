package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/tlsgate/tlsgate/wire"
)

// newLineScanner returns a scanner of the lines of r, each at most
// maxPayload bytes. A line is the bytes before '\n', kept as they are (a
// '\r' before the '\n' stays); a last line without '\n' counts when it is
// not empty.
func newLineScanner(r io.Reader, maxPayload int) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, min(4096, maxPayload+1)), maxPayload+1) // +1: the '\n'
	sc.Split(scanRawLines)
	return sc
}

// scanRawLines is bufio.ScanLines without the removal of '\r'.
func scanRawLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// lineError explains a scanner error.
func lineError(err error, line int) error {
	if errors.Is(err, bufio.ErrTooLong) {
		return fmt.Errorf("stdin line %d is longer than the maximum payload of %d bytes", line, wire.MaxPayload)
	}
	return fmt.Errorf("reading stdin: %w", err)
}
