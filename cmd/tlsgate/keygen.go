package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tlsgate/tlsgate/internal/keyfile"
	"github.com/tlsgate/tlsgate/wire"
)

// clientKeyFile is the name of the default client key in --dev-dir.
const clientKeyFile = "client.key"

// keygenCmd is `tlsgate keygen`.
type keygenCmd struct {
	Out   string `env:"TLSGATE_CLIENT_KEY" type:"path" placeholder:"FILE" help:"Where to write the key, PEM PKCS#8, mode 0600 (default: <dev-dir>/client.key, the key tlsgate client uses by default)."`
	Force bool   `help:"Replace an existing key file (its identity is lost)."`
}

func (c *keygenCmd) Run(rt *runtime) error {
	path, err := clientKeyPath(rt.globals, c.Out)
	if err != nil {
		return err
	}
	key, err := keyfile.Generate()
	if err != nil {
		return err
	}
	if c.Force {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--out %s: %w", path, err)
		}
	}
	if err := keyfile.Save(path, key); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("--out %s: the file exists; pass --force to replace it (the identity it holds is lost)", path)
		}
		return fmt.Errorf("--out %s: %w", path, err)
	}
	fmt.Fprintf(rt.stdout, "wrote %s\n", path)
	return printIdentity(rt.stdout, key)
}

// printIdentity prints the public key and session ID of key.
func printIdentity(w io.Writer, key ed25519.PrivateKey) error {
	pub := key.Public().(ed25519.PublicKey)
	_, err := fmt.Fprintf(w, "public key: %s\nsession id: %d\n", hex.EncodeToString(pub), wire.SessionID(pub))
	return err
}

// clientKeyPath is flagValue, or <dev-dir>/client.key when it is empty.
func clientKeyPath(g *globals, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	dir, err := g.devDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, clientKeyFile), nil
}
