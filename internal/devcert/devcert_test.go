package devcert

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKeepsTheCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	first, res, err := LoadOrCreate(dir)
	if err != nil || !res.Created || res.Broken != nil {
		t.Fatalf("first LoadOrCreate: %+v, %v; want created", res, err)
	}
	second, res, err := LoadOrCreate(dir)
	if err != nil || res.Created {
		t.Fatalf("second LoadOrCreate: %+v, %v; want loaded", res, err)
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
	if _, err := ReadCertificate(dir); err == nil || !strings.Contains(err.Error(), "start tlsgate serve in dev mode with the same --dev-dir") {
		t.Errorf("junk certificate file: %v, want an error that says how to regenerate it", err)
	}
}

// TestLoadOrCreateReplacesBrokenFiles: files a full disk left empty (or
// truncated, or one of the two missing) are replaced by a new
// certificate, and LoadOrCreate says why; files it cannot read are an
// error, and stay.
func TestLoadOrCreateReplacesBrokenFiles(t *testing.T) {
	for name, breakIt := range map[string]func(dir string) error{
		"empty files": func(dir string) error {
			return errors.Join(os.WriteFile(filepath.Join(dir, CertFile), nil, 0o644), os.WriteFile(filepath.Join(dir, KeyFile), nil, 0o600))
		},
		"truncated certificate": func(dir string) error {
			b, err := os.ReadFile(filepath.Join(dir, CertFile))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, CertFile), b[:len(b)/2], 0o644)
		},
		"missing key": func(dir string) error { return os.Remove(filepath.Join(dir, KeyFile)) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			old, _, err := LoadOrCreate(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := breakIt(dir); err != nil {
				t.Fatal(err)
			}
			cert, res, err := LoadOrCreate(dir)
			if err != nil || !res.Created || res.Broken == nil {
				t.Fatalf("LoadOrCreate over broken files: %+v, %v; want a new certificate and why", res, err)
			}
			if bytes.Equal(cert.Certificate[0], old.Certificate[0]) {
				t.Fatal("the certificate was not replaced")
			}
			if again, res, err := LoadOrCreate(dir); err != nil || res.Created || !bytes.Equal(again.Certificate[0], cert.Certificate[0]) {
				t.Fatalf("the replacement does not load: %+v, %v", res, err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != 2 {
				t.Fatalf("the directory holds %v (%v), want the two files and no temporary one", entries, err)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		if _, _, err := LoadOrCreate(dir); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, KeyFile) // a directory in its place: reading it fails, as root too
		if err := errors.Join(os.Remove(key), os.Mkdir(key, 0o700)); err != nil {
			t.Fatal(err)
		}
		if _, res, err := LoadOrCreate(dir); err == nil || res.Created {
			t.Fatalf("LoadOrCreate with an unreadable key: %+v, %v; want an error and nothing replaced", res, err)
		}
		if st, err := os.Stat(key); err != nil || !st.IsDir() {
			t.Fatalf("the unreadable key was replaced: %v", err)
		}
	})
}
