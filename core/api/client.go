package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// maxLine bounds one line of a stream the client reads.
const maxLine = 64 << 20

// Client talks to an agent's control API.
type Client struct {
	path string
	http *http.Client
}

// Dial returns a client for the agent listening on the socket at path. It
// connects once to check: the error is ErrNoAgent when nobody listens
// there, and another error (such as permission denied) when the agent
// cannot be reached.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if noAgent(err) {
			return nil, fmt.Errorf("%s: %w", path, ErrNoAgent)
		}
		return nil, fmt.Errorf("connect to the agent: %w", err)
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &Client{path: path, http: &http.Client{Transport: tr}}, nil
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Version returns the agent's version.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}

// Status returns the agent's status report.
func (c *Client) Status(ctx context.Context) (StatusReport, error) {
	var st StatusReport
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	if st.Tenants == nil {
		st.Tenants = []engine.TenantStatus{}
	}
	return st, err
}

// Tenants returns the agent's tenants.
func (c *Client) Tenants(ctx context.Context) ([]Tenant, error) {
	var out struct {
		Tenants []Tenant `json:"tenants"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/tenants", nil, &out)
	return out.Tenants, err
}

// Plan returns what a reconcile of every tenant would do now.
func (c *Client) Plan(ctx context.Context) (*plan.Plan, error) {
	var p plan.Plan
	if err := c.do(ctx, http.MethodGet, "/v1/plan", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Reconcile asks the agent to reconcile the named tenants (all when none
// is named) now, and returns the results.
func (c *Client) Reconcile(ctx context.Context, tenants ...string) ([]ReconcileResult, error) {
	var out ReconcileReport
	err := c.do(ctx, http.MethodPost, "/v1/reconcile", ReconcileRequest{Tenants: tenants}, &out)
	return out.Results, err
}

// Stop stops an instance.
func (c *Client) Stop(ctx context.Context, tenant, instance string) error {
	return c.instanceAction(ctx, tenant, instance, "stop")
}

// Start starts a stopped instance.
func (c *Client) Start(ctx context.Context, tenant, instance string) error {
	return c.instanceAction(ctx, tenant, instance, "start")
}

// Restart restarts an instance.
func (c *Client) Restart(ctx context.Context, tenant, instance string) error {
	return c.instanceAction(ctx, tenant, instance, "restart")
}

func (c *Client) instanceAction(ctx context.Context, tenant, instance, action string) error {
	return c.do(ctx, http.MethodPost, instancePath(tenant, instance)+"/"+action, struct{}{}, nil)
}

func instancePath(tenant, instance string) string {
	return "/v1/instances/" + url.PathEscape(tenant) + "/" + url.PathEscape(instance)
}

// StateHash returns the Merkle root of an instance's state.
func (c *Client) StateHash(ctx context.Context, tenant, instance string) (StateHash, error) {
	var out StateHash
	return out, c.do(ctx, http.MethodGet, instancePath(tenant, instance)+"/state", nil, &out)
}

// Checkpoint snapshots an instance's state under name.
func (c *Client) Checkpoint(ctx context.Context, tenant, instance, name string) (Checkpoint, error) {
	var out Checkpoint
	return out, c.do(ctx, http.MethodPost, instancePath(tenant, instance)+"/checkpoints", CheckpointRequest{Name: name}, &out)
}

// Checkpoints lists an instance's checkpoints, oldest first.
func (c *Client) Checkpoints(ctx context.Context, tenant, instance string) ([]Checkpoint, error) {
	var out CheckpointList
	err := c.do(ctx, http.MethodGet, instancePath(tenant, instance)+"/checkpoints", nil, &out)
	if out.Checkpoints == nil {
		out.Checkpoints = []Checkpoint{}
	}
	return out.Checkpoints, err
}

// Rollback returns an instance's state to the checkpoint name.
func (c *Client) Rollback(ctx context.Context, tenant, instance, name string) error {
	return c.do(ctx, http.MethodPost, checkpointPath(tenant, instance, name)+"/rollback", struct{}{}, nil)
}

// MountCheckpoint mounts the checkpoint name read-only next to the state.
func (c *Client) MountCheckpoint(ctx context.Context, tenant, instance, name string) (CheckpointMount, error) {
	var out CheckpointMount
	return out, c.do(ctx, http.MethodPost, checkpointPath(tenant, instance, name)+"/mount", struct{}{}, &out)
}

// UnmountCheckpoint unmounts the checkpoint name.
func (c *Client) UnmountCheckpoint(ctx context.Context, tenant, instance, name string) error {
	return c.do(ctx, http.MethodPost, checkpointPath(tenant, instance, name)+"/unmount", struct{}{}, nil)
}

func checkpointPath(tenant, instance, name string) string {
	return instancePath(tenant, instance) + "/checkpoints/" + url.PathEscape(name)
}

// Logs streams an instance's output into fn until it ends, the agent ends
// it, or ctx is cancelled.
func (c *Client) Logs(ctx context.Context, tenant, instance string, opts sdk.LogOptions, fn func([]byte) error) error {
	q := url.Values{"stream": {string(opts.Stream)}, "follow": {strconv.FormatBool(opts.Follow)}}
	if opts.Stream == "" {
		q.Set("stream", "stdout")
	}
	return c.stream(ctx, instancePath(tenant, instance)+"/logs?"+q.Encode(), func(line []byte) error {
		var ch LogChunk
		if err := json.Unmarshal(line, &ch); err != nil {
			return fmt.Errorf("decode log chunk: %w", err)
		}
		if ch.Error != nil {
			return ch.Error
		}
		return fn(ch.Data)
	})
}

// Journal returns the last n journal entries, oldest first (all when n is 0).
func (c *Client) Journal(ctx context.Context, n int) ([]JournalEntry, error) {
	var out struct {
		Entries []JournalEntry `json:"entries"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/journal?n="+strconv.Itoa(n), nil, &out)
	return out.Entries, err
}

// Events streams the agent's events into fn, starting with a version event,
// until ctx is cancelled, fn fails or the agent stops.
func (c *Client) Events(ctx context.Context, fn func(events.Event) error) error {
	return c.stream(ctx, "/v1/events", func(line []byte) error {
		var e events.Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		return fn(e)
	})
}

func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://kigumi"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("agent at %s: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct {
			Error *Error `json:"error"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&e); err != nil || e.Error == nil {
			return nil, fmt.Errorf("agent at %s: %s", c.path, resp.Status)
		}
		return nil, e.Error
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode the agent's answer: %w", err)
	}
	return nil
}

func (c *Client) stream(ctx context.Context, path string, fn func([]byte) error) error {
	resp, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("the agent ended the stream: %w", err)
		}
		return err
	}
	return ctx.Err()
}
