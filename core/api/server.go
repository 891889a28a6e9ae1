package api

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// eventBuffer is how many events a slow event-stream reader may fall
// behind before it loses events.
const eventBuffer = 1024

// maxBody bounds a request body.
const maxBody = 1 << 20

// Options configure a Server.
type Options struct {
	// Host is the host's name, reported by /v1/status.
	Host string
	// Version is kigumi's version, reported by /v1/version and the first
	// event of every event stream.
	Version string
	// GID is the admin group whose members may use the API (root always may).
	GID uint32
	// Logger logs refusals and failed requests.
	Logger hclog.Logger
}

// Server serves an Agent over HTTP.
type Server struct {
	agent Agent
	opts  Options
	mux   *http.ServeMux
}

// NewServer returns a server for agent.
func NewServer(agent Agent, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	s := &Server{agent: agent, opts: opts, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/version", s.version)
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/tenants", s.tenants)
	s.mux.HandleFunc("GET /v1/plan", s.plan)
	s.mux.HandleFunc("POST /v1/reconcile", s.reconcile)
	s.mux.HandleFunc("POST /v1/instances/{tenant}/{instance}/{action}", s.instanceAction)
	s.mux.HandleFunc("GET /v1/instances/{tenant}/{instance}/logs", s.logs)
	s.mux.HandleFunc("GET /v1/instances/{tenant}/{instance}/state", s.stateHash)
	s.mux.HandleFunc("GET /v1/instances/{tenant}/{instance}/checkpoints", s.checkpoints)
	s.mux.HandleFunc("POST /v1/instances/{tenant}/{instance}/checkpoints", s.checkpoint)
	s.mux.HandleFunc("POST /v1/instances/{tenant}/{instance}/checkpoints/{name}/{action}", s.checkpointAction)
	s.mux.HandleFunc("GET /v1/journal", s.journal)
	s.mux.HandleFunc("GET /v1/events", s.events)
	return s
}

type peerKey struct{}

type peerResult struct {
	peer Peer
	err  error
}

// Serve serves connections from ln until ctx ends, then closes ln and
// ends open streams.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := peerOf(c)
			return context.WithValue(ctx, peerKey{}, peerResult{p, err})
		},
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeHTTP checks the caller's credentials, then serves the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pr, ok := r.Context().Value(peerKey{}).(peerResult)
	if !ok {
		pr.err = errors.New("not a unix socket connection")
	}
	if pr.err != nil {
		s.opts.Logger.Warn("refused a connection", "error", pr.err)
		s.fail(w, &Error{Code: CodeForbidden, Message: "kigumi agent: cannot read your credentials: " + pr.err.Error()})
		return
	}
	if !pr.peer.allowed(s.opts.GID) {
		group := strconv.Itoa(int(s.opts.GID))
		if g, err := user.LookupGroupId(group); err == nil {
			group = g.Name
		}
		s.opts.Logger.Warn("refused a caller", "uid", pr.peer.UID, "pid", pr.peer.PID)
		s.fail(w, &Error{Code: CodeForbidden, Message: fmt.Sprintf(
			"kigumi agent: uid %d may not use the control API: only root and members of the group %q may (add the user with: usermod -aG %s USER)",
			pr.peer.UID, group, group)})
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	s.reply(w, VersionInfo{Version: s.opts.Version, API: Version, EventSchema: events.SchemaVersion}, nil)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.agent.Status(r.Context())
	s.reply(w, StatusReport{Host: s.opts.Host, Tenants: st}, err)
}

func (s *Server) tenants(w http.ResponseWriter, r *http.Request) {
	t, err := s.agent.Tenants(r.Context())
	s.reply(w, struct {
		Tenants []Tenant `json:"tenants"`
	}{t}, err)
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	p, err := s.agent.Plan(r.Context())
	if p == nil {
		p = &plan.Plan{}
	}
	s.reply(w, p, err)
}

// ReconcileRequest is the body of POST /v1/reconcile.
type ReconcileRequest struct {
	// Tenants names the tenants to reconcile; all when empty.
	Tenants []string `json:"tenants,omitempty"`
}

// ReconcileReport is the answer of POST /v1/reconcile.
type ReconcileReport struct {
	Results []ReconcileResult `json:"results"`
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) {
	var req ReconcileRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		s.fail(w, fmt.Errorf("decode request: %v: %w", err, ErrInvalid))
		return
	}
	res, err := s.agent.Reconcile(r.Context(), req.Tenants...)
	s.reply(w, ReconcileReport{Results: res}, err)
}

func (s *Server) instanceAction(w http.ResponseWriter, r *http.Request) {
	tenant, instance := r.PathValue("tenant"), r.PathValue("instance")
	var act func(context.Context, string, string) error
	switch r.PathValue("action") {
	case "stop":
		act = s.agent.Stop
	case "start":
		act = s.agent.Start
	case "restart":
		act = s.agent.Restart
	default:
		s.fail(w, fmt.Errorf("unknown action %q (stop, start, restart): %w", r.PathValue("action"), ErrNotFound))
		return
	}
	err := act(r.Context(), tenant, instance)
	if err != nil {
		s.opts.Logger.Info("instance action failed", "tenant", tenant, "instance", instance,
			"action", r.PathValue("action"), "error", err)
	}
	s.reply(w, struct{}{}, err)
}

func (s *Server) stateHash(w http.ResponseWriter, r *http.Request) {
	tenant, instance := r.PathValue("tenant"), r.PathValue("instance")
	root, err := s.agent.StateHash(r.Context(), tenant, instance)
	s.reply(w, StateHash{Tenant: tenant, Instance: instance, Root: hex.EncodeToString(root)}, err)
}

func (s *Server) checkpoints(w http.ResponseWriter, r *http.Request) {
	list, err := s.agent.Checkpoints(r.Context(), r.PathValue("tenant"), r.PathValue("instance"))
	s.reply(w, CheckpointList{Checkpoints: Checkpoints(list)}, err)
}

func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) {
	var req CheckpointRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		s.fail(w, fmt.Errorf("decode request: %v: %w", err, ErrInvalid))
		return
	}
	cp, err := s.agent.Checkpoint(r.Context(), r.PathValue("tenant"), r.PathValue("instance"), req.Name)
	s.reply(w, Checkpoints([]sdk.Checkpoint{cp})[0], err)
}

func (s *Server) checkpointAction(w http.ResponseWriter, r *http.Request) {
	tenant, instance, name := r.PathValue("tenant"), r.PathValue("instance"), r.PathValue("name")
	var (
		out any = struct{}{}
		err error
	)
	switch r.PathValue("action") {
	case "rollback":
		err = s.agent.Rollback(r.Context(), tenant, instance, name)
	case "mount":
		var m sdk.Mount
		m, err = s.agent.MountCheckpoint(r.Context(), tenant, instance, name)
		out = CheckpointMount{Checkpoint: name, Path: m.Source, ReadOnly: m.ReadOnly, Options: m.Options}
	case "unmount":
		err = s.agent.UnmountCheckpoint(r.Context(), tenant, instance, name)
	default:
		s.fail(w, fmt.Errorf("unknown checkpoint action %q (rollback, mount, unmount): %w", r.PathValue("action"), ErrNotFound))
		return
	}
	if err != nil {
		s.opts.Logger.Info("checkpoint action failed", "tenant", tenant, "instance", instance, "checkpoint", name,
			"action", r.PathValue("action"), "error", err)
	}
	s.reply(w, out, err)
}

// LogChunk is one line of the logs stream: a chunk of output, or the error
// that ended the stream.
type LogChunk struct {
	Data  []byte `json:"data,omitempty"`
	Error *Error `json:"error,omitempty"`
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	tenant, instance := r.PathValue("tenant"), r.PathValue("instance")
	q := r.URL.Query()
	opts := sdk.LogOptions{Stream: sdk.Stdout, Follow: q.Get("follow") == "true"}
	switch q.Get("stream") {
	case "", "stdout":
	case "stderr":
		opts.Stream = sdk.Stderr
	default:
		s.fail(w, fmt.Errorf("unknown stream %q (stdout, stderr): %w", q.Get("stream"), ErrInvalid))
		return
	}
	lw := newLineWriter(w)
	err := s.agent.Logs(r.Context(), tenant, instance, opts, func(b []byte) error {
		return lw.write(LogChunk{Data: b})
	})
	if err != nil && r.Context().Err() == nil {
		if !lw.started {
			s.fail(w, err)
			return
		}
		code, _ := classify(err)
		_ = lw.write(LogChunk{Error: &Error{Code: code, Message: err.Error()}})
		return
	}
	lw.start() // an empty log is an empty stream
}

func (s *Server) journal(w http.ResponseWriter, r *http.Request) {
	n := 0
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			s.fail(w, fmt.Errorf("n=%q is not a count: %w", v, ErrInvalid))
			return
		}
	}
	entries, err := s.agent.Journal(r.Context(), n)
	s.reply(w, struct {
		Entries []JournalEntry `json:"entries"`
	}{JournalEntries(entries)}, err)
}

// events streams the bus as JSON lines, opened by a version event.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	sub := s.agent.Events().Subscribe(eventBuffer)
	defer sub.Close()
	lw := newLineWriter(w)
	if err := lw.write(events.Event{Version: events.SchemaVersion, Time: time.Now().UTC(),
		Type: events.TypeVersion, Message: s.opts.Version}); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-sub.C():
			if !ok {
				return
			}
			if err := lw.write(e); err != nil {
				return
			}
		}
	}
}

func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	code, status := classify(err)
	if code == CodeInternal {
		s.opts.Logger.Error("request failed", "error", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error Error `json:"error"`
	}{Error{Code: code, Message: err.Error()}})
}

// lineWriter writes JSON lines, flushing each.
type lineWriter struct {
	w       http.ResponseWriter
	enc     *json.Encoder
	rc      *http.ResponseController
	started bool
}

func newLineWriter(w http.ResponseWriter) *lineWriter {
	return &lineWriter{w: w, enc: json.NewEncoder(w), rc: http.NewResponseController(w)}
}

func (l *lineWriter) start() {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", "application/jsonl")
		l.w.WriteHeader(http.StatusOK)
	}
}

func (l *lineWriter) write(v any) error {
	l.start()
	if err := l.enc.Encode(v); err != nil {
		return err
	}
	return l.rc.Flush()
}
