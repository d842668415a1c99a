package control_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// issue makes a certificate for cn signed by parent (self-signed when
// parent is nil), returning it with its key and parsed form.
func issue(t *testing.T, cn string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (tls.Certificate, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, key
}

// TestMutualTLS: with client CAs configured, only clients presenting a
// certificate signed by the CA may call; others fail their TLS handshake.
func TestMutualTLS(t *testing.T) {
	_, caCert, caKey := issue(t, "control CA", true, nil, nil)
	serverCert, _, _ := issue(t, "localhost", false, caCert, caKey)
	clientCert, _, _ := issue(t, "ops", false, caCert, caKey)
	_, strangerCA, strangerKey := issue(t, "other CA", true, nil, nil)
	strangerCert, _, _ := issue(t, "stranger", false, strangerCA, strangerKey)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	e := start(t, setup{tls: &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}})

	call := func(certs []tls.Certificate) error {
		creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: certs, ServerName: "localhost"})
		cc, err := grpc.NewClient(e.ctlAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = tlsgatev1.NewControlServiceClient(cc).ListSessions(timeout(t, wait), &tlsgatev1.ListSessionsRequest{})
		return err
	}
	if err := call([]tls.Certificate{clientCert}); err != nil {
		t.Fatalf("client signed by the CA: %v", err)
	}
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "another CA": {strangerCert}} {
		if err := call(certs); status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: %v, want UNAVAILABLE (TLS handshake refused)", name, err)
		}
	}
}
