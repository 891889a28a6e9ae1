// Package metrics exposes the agent's Prometheus metrics: counters and
// histograms fed from the event bus, and gauges computed at scrape time from
// the agent's status and its state database, so that a tenant's series
// vanish with the tenant. They live in a private registry with the Go and
// process collectors, served on a loopback address.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/state"
)

// Statuser reports the status of every tenant and instance. It is called at
// every scrape, so it should answer from the agent's snapshot.
type Statuser interface {
	Status(ctx context.Context) ([]engine.TenantStatus, error)
}

// StateStats reports figures about the state database.
type StateStats interface {
	Stats() (state.Stats, error)
}

// collectTimeout bounds the scrape-time calls.
const collectTimeout = 5 * time.Second

// Metrics holds the agent's metrics.
type Metrics struct {
	reg       *prometheus.Registry
	events    *prometheus.CounterVec
	actions   *prometheus.CounterVec
	reconcile *prometheus.HistogramVec
	restarts  *prometheus.CounterVec
	exits     *prometheus.CounterVec
	plugins   *prometheus.CounterVec
	denials   prometheus.Counter
}

// New returns the metrics of an agent whose status, state database and
// event bus are given; any may be nil to leave its metrics out.
func New(status Statuser, db StateStats, bus *events.Bus) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kigumi_events_total", Help: "Events published by the agent, by type.",
		}, []string{"type"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kigumi_actions_total", Help: "Apply actions finished, by operation and result (done, failed).",
		}, []string{"op", "result"}),
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kigumi_reconcile_duration_seconds", Help: "Time one tenant's reconcile took, by result (ok, error).",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"result"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kigumi_instance_restarts_total", Help: "Instances restarted by their restart policy, by cause.",
		}, []string{"cause"}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kigumi_instance_exits_total", Help: "Instance workloads that ended, by cause.",
		}, []string{"cause"}),
		plugins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kigumi_plugin_restarts_total", Help: "Plugin processes relaunched after they died, by cause.",
		}, []string{"cause"}),
		denials: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kigumi_policy_denials_total", Help: "Policy denials.",
		}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.events, m.actions, m.reconcile, m.restarts, m.exits, m.plugins, m.denials)
	if status != nil || db != nil {
		m.reg.MustRegister(&snapshot{status: status, db: db})
	}
	if bus != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kigumi_event_bus_dropped_total", Help: "Events that subscribers of the event bus lost to full buffers.",
		}, func() float64 { return float64(bus.Dropped()) }))
	}
	return m
}

// Registry returns the registry holding every metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Observe counts one event.
func (m *Metrics) Observe(e events.Event) {
	m.events.WithLabelValues(string(e.Type)).Inc()
	switch e.Type {
	case events.TypeActionDone:
		m.actions.WithLabelValues(e.Op, "done").Inc()
	case events.TypeActionFailed:
		m.actions.WithLabelValues(e.Op, "failed").Inc()
	case events.TypeReconcile:
		result := "ok"
		if e.Error != "" {
			result = "error"
		}
		m.reconcile.WithLabelValues(result).Observe(e.Duration)
	case events.TypeInstanceRestart:
		m.restarts.WithLabelValues(cause(e)).Inc()
	case events.TypeInstanceExited:
		m.exits.WithLabelValues(cause(e)).Inc()
	case events.TypePluginRestart:
		m.plugins.WithLabelValues(cause(e)).Inc()
	case events.TypePolicyDenied:
		m.denials.Inc()
	}
}

func cause(e events.Event) string {
	if e.Cause == "" {
		return "unknown"
	}
	return e.Cause
}

// Run counts the events of sub until it closes or ctx ends. Subscribe
// before starting the work whose events must be counted.
func (m *Metrics) Run(ctx context.Context, sub *events.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.C():
			if !ok {
				return
			}
			m.Observe(e)
		}
	}
}

// Handler returns the HTTP handler of the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Serve serves the metrics at /metrics on ln until ctx ends. The address
// must be a loopback one: the host spec checks it.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

var (
	instancesDesc = prometheus.NewDesc("kigumi_instances",
		"Instances by tenant and state (running, exited, stopped, unknown...).", []string{"tenant", "state"}, nil)
	tenantsDesc = prometheus.NewDesc("kigumi_tenants",
		"Tenants by phase (creating, updating, ready, destroying).", []string{"phase"}, nil)
	journalDesc = prometheus.NewDesc("kigumi_journal_entries",
		"Entries kept in the state database's journal.", nil, nil)
	dbSizeDesc = prometheus.NewDesc("kigumi_state_db_size_bytes",
		"Size of the state database file.", nil, nil)
)

// snapshot computes gauges at scrape time.
type snapshot struct {
	status Statuser
	db     StateStats
}

// Describe implements prometheus.Collector.
func (s *snapshot) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- tenantsDesc
	ch <- journalDesc
	ch <- dbSizeDesc
}

// Collect implements prometheus.Collector.
func (s *snapshot) Collect(ch chan<- prometheus.Metric) {
	if s.status != nil {
		ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
		defer cancel()
		st, err := s.status.Status(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(instancesDesc, fmt.Errorf("status: %w", err))
		} else {
			type key struct{ tenant, state string }
			instances := map[key]int{}
			phases := map[string]int{}
			for _, t := range st {
				phases[string(t.Phase)]++
				for _, i := range t.Instances {
					instances[key{t.Name, string(i.State)}]++
				}
			}
			for k, n := range instances {
				ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(n), k.tenant, k.state)
			}
			for p, n := range phases {
				ch <- prometheus.MustNewConstMetric(tenantsDesc, prometheus.GaugeValue, float64(n), p)
			}
		}
	}
	if s.db != nil {
		st, err := s.db.Stats()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(journalDesc, fmt.Errorf("state stats: %w", err))
			return
		}
		ch <- prometheus.MustNewConstMetric(journalDesc, prometheus.GaugeValue, float64(st.JournalEntries))
		ch <- prometheus.MustNewConstMetric(dbSizeDesc, prometheus.GaugeValue, float64(st.SizeBytes))
	}
}
