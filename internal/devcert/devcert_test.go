package devcert

import (
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
	fp := Fingerprint(first.Certificate[0])
	if got := Fingerprint(second.Certificate[0]); got != fp {
		t.Errorf("fingerprint changed across loads: %s, then %s", fp, got)
	}
	if got, err := ReadFingerprint(dir); err != nil || got != fp {
		t.Errorf("ReadFingerprint = %q, %v; want %q", got, err, fp)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %o, want 600", mode)
	}
}

func TestReadFingerprintErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFingerprint(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty dir: got %v, want fs.ErrNotExist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFingerprint(dir); err == nil {
		t.Error("junk certificate file: got no error")
	}
}
