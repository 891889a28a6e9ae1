package plan

import (
	"hash/fnv"
	"time"

	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// Restart backoff: the n-th consecutive failed run waits RestartBase * 2^(n-1),
// at most RestartMax, plus up to a quarter more of jitter. A run that lasts
// RestartReset or longer clears the count.
const (
	RestartBase  = time.Second
	RestartMax   = 5 * time.Minute
	RestartReset = 10 * time.Minute
)

// RestartDecision says whether an ended workload starts again now.
type RestartDecision struct {
	Restart bool
	// Wait is how long until the restart falls due, when it is held back
	// by the backoff.
	Wait time.Duration
	// Reason is said in the plan, the status and the events.
	Reason string
}

// Failed reports whether a workload that ended with exit failed: a non-zero
// exit, a signal, or a kill for a limit.
func Failed(exit state.Exit) bool {
	return exit.Cause != state.CauseExit || exit.Code != 0
}

// DecideRestart decides, at now, whether inst's workload, which ended as exit
// says, is started again, from its restart policy, whether an operator holds
// it stopped, and the backoff of its consecutive failures
// (inst.Run.Failures, which include this exit). An empty policy is
// spec.RestartOnFailure.
func DecideRestart(inst state.Instance, exit state.Exit, now time.Time) RestartDecision {
	policy := inst.Spec.Restart
	if policy == "" {
		policy = spec.RestartOnFailure
	}
	switch {
	case inst.Held:
		return RestartDecision{Reason: "stopped by an operator"}
	case policy == spec.RestartNever:
		return RestartDecision{Reason: "restart policy is never"}
	case policy == spec.RestartOnFailure && !Failed(exit):
		return RestartDecision{Reason: "exited successfully; restart policy is on-failure"}
	}
	reason := "restart policy " + policy + " after " + describeExit(exit)
	if exit.At.IsZero() || inst.Run.Failures == 0 {
		return RestartDecision{Restart: true, Reason: reason}
	}
	due := exit.At.Add(RestartDelay(inst.Key(), inst.Run.Failures))
	if wait := due.Sub(now); wait > 0 {
		return RestartDecision{Wait: wait, Reason: "backing off after " + describeExit(exit)}
	}
	return RestartDecision{Restart: true, Reason: reason}
}

// RestartDelay is the backoff before restarting key after failures
// consecutive failed runs, jittered by a fraction that depends only on key
// and failures, so that a plan is reproducible while restarts of many
// instances spread out.
func RestartDelay(key string, failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := RestartBase
	for i := 1; i < failures && d < RestartMax; i++ {
		d *= 2
	}
	d = min(d, RestartMax)
	h := fnv.New32a()
	h.Write([]byte(key))
	h.Write([]byte{byte(failures), byte(failures >> 8)})
	return d + time.Duration(uint64(d)/4*uint64(h.Sum32()%1000)/1000)
}
