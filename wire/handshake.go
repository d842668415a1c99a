package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"filippo.io/edwards25519"
)

// Handshake sizes and the signature context of protocol v1.
const (
	NonceLen       = 32
	ServerHelloLen = 1 + NonceLen                                      // 33
	ClientAuthLen  = 1 + ed25519.PublicKeySize + ed25519.SignatureSize // 97
	SessionIDLen   = 8
	authContext    = "tlsgate-auth-v1\x00"                     // 16 bytes
	signedLen      = len(authContext) + NonceLen + sha256.Size // 80
)

// Handshake errors. Each means: the server sends nothing and closes.
var (
	ErrHandshakeVersion   = errors.New("wire: handshake version is not 0x01")
	ErrHandshakeSignature = errors.New("wire: handshake signature does not verify")
)

// ServerHello is the server's first message: a fresh nonce.
type ServerHello struct {
	Nonce [NonceLen]byte
}

// Append encodes the hello.
func (h ServerHello) Append(dst []byte) []byte {
	return append(append(dst, Version), h.Nonce[:]...)
}

// ReadServerHello reads the server's 33-byte hello.
func ReadServerHello(r io.Reader) (ServerHello, error) {
	var b [ServerHelloLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ServerHello{}, fmt.Errorf("wire: reading server hello: %w", err)
	}
	if b[0] != Version {
		return ServerHello{}, ErrHandshakeVersion
	}
	var h ServerHello
	copy(h.Nonce[:], b[1:])
	return h, nil
}

// ClientAuth is the client's answer: its public key and a signature binding
// the nonce to the server certificate it saw.
type ClientAuth struct {
	PublicKey ed25519.PublicKey
	Signature []byte
}

// Append encodes the answer.
func (a ClientAuth) Append(dst []byte) []byte {
	dst = append(dst, Version)
	dst = append(dst, a.PublicKey...)
	return append(dst, a.Signature...)
}

// ReadClientAuth reads the client's 97-byte answer. It checks the version
// but not the signature; see Verify.
func ReadClientAuth(r io.Reader) (ClientAuth, error) {
	var b [ClientAuthLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ClientAuth{}, fmt.Errorf("wire: reading client auth: %w", err)
	}
	if b[0] != Version {
		return ClientAuth{}, ErrHandshakeVersion
	}
	pub := make([]byte, ed25519.PublicKeySize)
	copy(pub, b[1:1+ed25519.PublicKeySize])
	sig := make([]byte, ed25519.SignatureSize)
	copy(sig, b[1+ed25519.PublicKeySize:])
	return ClientAuth{PublicKey: pub, Signature: sig}, nil
}

// signedMessage is what the client signs: the context, the nonce and the
// SHA-256 of the server's leaf certificate (DER).
func signedMessage(nonce [NonceLen]byte, certHash [sha256.Size]byte) []byte {
	m := make([]byte, 0, signedLen)
	m = append(m, authContext...)
	m = append(m, nonce[:]...)
	return append(m, certHash[:]...)
}

// SignAuth builds the client's answer to nonce for a server whose leaf
// certificate hashes to certHash.
func SignAuth(key ed25519.PrivateKey, nonce [NonceLen]byte, certHash [sha256.Size]byte) ClientAuth {
	return ClientAuth{
		PublicKey: key.Public().(ed25519.PublicKey),
		Signature: ed25519.Sign(key, signedMessage(nonce, certHash)),
	}
}

// Verify checks the signature against the nonce and the server's own leaf
// certificate hash.
func (a ClientAuth) Verify(nonce [NonceLen]byte, certHash [sha256.Size]byte) error {
	if len(a.PublicKey) != ed25519.PublicKeySize || smallOrder(a.PublicKey) ||
		!ed25519.Verify(a.PublicKey, signedMessage(nonce, certHash), a.Signature) {
		return ErrHandshakeSignature
	}
	return nil
}

// smallOrder reports whether pub is not a point, or a point of small order
// (its multiple by the cofactor is the identity). No one holds the private
// key of such a point, and a signature made without one (R = the identity,
// S = 0, for the identity) verifies for every message.
func smallOrder(pub ed25519.PublicKey) bool {
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return true
	}
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
}

// SessionID derives the session ID of an identity: the first 8 bytes of
// SHA-256(public key), big-endian, with the top bit cleared.
func SessionID(pub ed25519.PublicKey) uint64 {
	sum := sha256.Sum256(pub)
	return binary.BigEndian.Uint64(sum[:8]) &^ (1 << 63)
}

// AppendSessionID encodes the server's final handshake message.
func AppendSessionID(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(dst, id)
}

// ReadSessionID reads the server's final handshake message.
func ReadSessionID(r io.Reader) (uint64, error) {
	var b [SessionIDLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("wire: reading session id: %w", err)
	}
	return binary.BigEndian.Uint64(b[:]), nil
}
