tenant "alice" {
  instance "box" {
    runtime = "containerd"
    image   = "127.0.0.1:5099/kigumi/example-busybox:1"
    # What the container shows of itself: its status (CapEff, NoNewPrivs,
    # Seccomp, the uids), its uid map (the tenant's own range) and a visit
    # it counts in its state (a FUSE filesystem served from the host, which
    # it writes as its own uid); then it keeps running (and ends on
    # SIGTERM, which a pid 1 has to ask for).
    args = ["/bin/sh", "-c", "cat /proc/self/status /proc/self/uid_map; echo visit >>/state/visits && echo \"state: $(wc -l </state/visits) visit(s), written as uid $(stat -c %u /state/visits)\"; trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"]

    state {
      size = "8MiB"
    }
    permissions = ["state.write"]

    resources {
      memory = "32MiB"
      cpu    = 0.1
      pids   = 16
    }
  }
}
