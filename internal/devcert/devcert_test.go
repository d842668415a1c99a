package devcert

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateKeepsTheCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	first, created, err := LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	second, created, err := LoadOrCreate(dir)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	der := first.Certificate[0]
	if !bytes.Equal(second.Certificate[0], der) {
		t.Error("certificate changed across loads")
	}
	if got, err := ReadCertificate(dir); err != nil || !bytes.Equal(got, der) {
		t.Errorf("ReadCertificate = %x, %v; want %x", got, err, der)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %o, want 600", mode)
	}
}

func TestReadCertificateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadCertificate(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty dir: got %v, want fs.ErrNotExist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCertificate(dir); err == nil {
		t.Error("junk certificate file: got no error")
	}
}
