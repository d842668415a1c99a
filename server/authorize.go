package server

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// Authorizer decides, at the handshake, whether a client identity may
// connect. It runs after the client has proven it holds the key, before
// the session exists. A non-nil error refuses the client: the server sends
// nothing, closes, and logs the error.
type Authorizer interface {
	Authorize(ctx context.Context, key ed25519.PublicKey, remote net.Addr) error
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(ctx context.Context, key ed25519.PublicKey, remote net.Addr) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, key ed25519.PublicKey, remote net.Addr) error {
	return f(ctx, key, remote)
}

// ErrNotAllowed is the AllowList's refusal.
var ErrNotAllowed = errors.New("server: public key is not on the allow list")

// AllowList admits only the listed public keys.
type AllowList map[[ed25519.PublicKeySize]byte]struct{}

// Authorize admits listed keys.
func (a AllowList) Authorize(_ context.Context, key ed25519.PublicKey, _ net.Addr) error {
	if _, ok := a[[ed25519.PublicKeySize]byte(key)]; !ok {
		return ErrNotAllowed
	}
	return nil
}

// LoadAllowList reads an allow-list file: one Ed25519 public key per line,
// as 64 hex digits or standard base64; blank lines and text after '#' are
// ignored. An error names the line.
func LoadAllowList(path string) (AllowList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	list := AllowList{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, err := hex.DecodeString(line)
		if err != nil {
			key, err = base64.StdEncoding.DecodeString(line)
		}
		if err != nil || len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s:%d: not an Ed25519 public key (64 hex digits or base64 of 32 bytes)", path, n)
		}
		list[[ed25519.PublicKeySize]byte(key)] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return list, nil
}
