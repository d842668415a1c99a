// Package keyfile loads and saves the Ed25519 private key that identifies a
// tlsgate client, as a PEM "PRIVATE KEY" block (PKCS#8) in a file of mode
// 0600.
package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// pemType is the PEM block type of a PKCS#8 private key.
const pemType = "PRIVATE KEY"

// Load reads an Ed25519 private key from a PEM PKCS#8 file. A missing file
// gives an error wrapping fs.ErrNotExist.
func Load(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	key, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %s: %w", path, err)
	}
	return key, nil
}

// Parse decodes an Ed25519 private key from PEM PKCS#8 bytes.
func Parse(pemBytes []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is a %T, want an Ed25519 key", k)
	}
	return key, nil
}

// Encode returns key as a PEM PKCS#8 block.
func Encode(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("keyfile: ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// Save writes key to a new file at path, mode 0600, creating its directory
// (mode 0700) if needed. It never overwrites: if path exists it returns an
// error wrapping fs.ErrExist.
func Save(path string, key ed25519.PrivateKey) (err error) {
	b, err := Encode(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("keyfile: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	return nil
}

// Generate returns a new Ed25519 private key.
func Generate() (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	return key, nil
}

// LoadOrCreate loads the key at path, or generates and saves a new one if
// the file does not exist. created reports which.
func LoadOrCreate(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if key, err = Generate(); err != nil {
		return nil, false, err
	}
	switch err := Save(path, key); {
	case errors.Is(err, fs.ErrExist): // another process created it first
		key, err = Load(path)
		return key, false, err
	case err != nil:
		return nil, false, err
	}
	return key, true, nil
}
