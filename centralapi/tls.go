package centralapi

import (
	"crypto/tls"
	"fmt"
)

func (s *Server) loadTLS(certFile, keyFile string) error {
	if certFile == "" || keyFile == "" {
		return fmt.Errorf("central.tls.cert_file and central.tls.key_file go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("central.tls: %w", err)
	}
	s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	return nil
}
