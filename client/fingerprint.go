package client

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Fingerprint returns the lower-case hex SHA-256 of a certificate's DER.
func Fingerprint(cert []byte) string {
	sum := sha256.Sum256(cert)
	return hex.EncodeToString(sum[:])
}

// parseFingerprint decodes a hex SHA-256, case-insensitive, colons allowed.
func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("client: fingerprint %q is not a hex SHA-256", s)
	}
	return b, nil
}

// tlsConfig builds the TLS configuration Dial uses.
func (c *config) buildTLS() (*tls.Config, error) {
	t := &tls.Config{}
	if c.tlsConfig != nil {
		t = c.tlsConfig.Clone()
	}
	if t.MinVersion == 0 {
		t.MinVersion = tls.VersionTLS13
	}
	if !c.pinned {
		return t, nil
	}
	want, err := parseFingerprint(c.fingerprint)
	if err != nil {
		return nil, err
	}
	next := t.VerifyConnection
	// The chain is not verified against roots: the pin replaces it, and
	// VerifyConnection always runs, resumed sessions included.
	t.InsecureSkipVerify = true
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("client: server sent no certificate")
		}
		got := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("%w: got %x, want %x", ErrFingerprintMismatch, got, want)
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return t, nil
}
