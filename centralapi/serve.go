package centralapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server is central's HTTP service, listening.
type Server struct {
	srv *http.Server
	ln  net.Listener
	tls bool
}

// Listen opens central's HTTP service on addr (":0" style for any port). certFile and keyFile,
// when set, make it HTTPS.
func Listen(addr string, h http.Handler, certFile, keyFile string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, tls: certFile != "" || keyFile != "", srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}}
	if s.tls {
		if err := s.loadTLS(certFile, keyFile); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return s, nil
}

// URL is where the service answers: http(s)://host:port.
func (s *Server) URL() string {
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// Serve serves until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() {
		if s.tls {
			errc <- s.srv.ServeTLS(s.ln, "", "")
		} else {
			errc <- s.srv.Serve(s.ln)
		}
	}()
	if log != nil {
		log.Info("central's HTTP service is running", "url", s.URL())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("central's HTTP service: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
