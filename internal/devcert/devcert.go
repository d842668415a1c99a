// Package devcert makes and keeps the self-signed certificate of dev mode,
// so that its fingerprint stays stable across restarts.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside the dev-mode directory.
const (
	CertFile = "dev-cert.pem"
	KeyFile  = "dev-key.pem"
)

// Generate returns a new self-signed ECDSA P-256 certificate for localhost,
// 127.0.0.1 and ::1, valid for ten years, with its PEM encodings.
func Generate() (cert tls.Certificate, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "tlsgate dev"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return cert, certPEM, keyPEM, err
}

// Result says what LoadOrCreate found in the directory.
type Result struct {
	// Created: there was no usable certificate, so a new one was made and
	// saved (its fingerprint is new).
	Created bool
	// Broken, when set, is why the files found did not load (empty after a
	// full disk, truncated, not PEM, a key that does not match): they were
	// replaced.
	Broken error
}

// LoadOrCreate loads the dev certificate from dir, creating and saving one
// (key file mode 0600) the first time, or when the files there do not
// load. Each file is written whole or not at all: to a temporary file,
// synced, then renamed over the old one. An error reading the files
// (permissions, say) is returned as is: nothing is replaced then.
func LoadOrCreate(dir string) (tls.Certificate, Result, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	for _, err := range []error{certErr, keyErr} {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return tls.Certificate{}, Result{}, fmt.Errorf("devcert: %w", err)
		}
	}
	var res Result
	switch {
	case certErr == nil && keyErr == nil:
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err == nil {
			return cert, Result{}, nil
		}
		res.Broken = fmt.Errorf("%s and %s do not load: %w", certPath, keyPath, err)
	case certErr == nil:
		res.Broken = fmt.Errorf("%s is missing", keyPath)
	case keyErr == nil:
		res.Broken = fmt.Errorf("%s is missing", certPath)
	}
	cert, certPEM, keyPEM, err := Generate()
	if err != nil {
		return tls.Certificate{}, Result{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, Result{}, err
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, Result{}, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, Result{}, err
	}
	res.Created = true
	return cert, res, nil
}

// writeFile writes data to path whole or not at all: to a temporary file
// in the same directory, synced, renamed over path, and the directory
// synced, so that a crash or a full disk leaves the old file or the new
// one, never a part.
func writeFile(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("devcert: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("devcert: writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself, where the file system supports it
		_ = d.Close()
	}
	return nil
}

// ReadCertificate returns the DER of the dev certificate kept in dir, so
// that a client on the same machine can pin it (client.Fingerprint). When there is none
// the error wraps fs.ErrNotExist.
func ReadCertificate(dir string) ([]byte, error) {
	certPath := filepath.Join(dir, CertFile)
	b, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("devcert: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("devcert: %s holds no PEM certificate: start tlsgate serve in dev mode with the same --dev-dir, which replaces a broken one (the fingerprint changes)", certPath)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("devcert: %s does not parse (%w): start tlsgate serve in dev mode with the same --dev-dir, which replaces a broken one (the fingerprint changes)", certPath, err)
	}
	return block.Bytes, nil
}

// DefaultDir is where dev mode keeps its files: $XDG_CONFIG_HOME/tlsgate,
// or the platform's user config dir.
func DefaultDir() (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "tlsgate"), nil
}
