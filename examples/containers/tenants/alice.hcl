tenant "alice" {
  instance "box" {
    runtime = "containerd"
    image   = "127.0.0.1:5099/kigumi/example-busybox:1"
    # What the container shows of itself: its status (CapEff, NoNewPrivs,
    # Seccomp, the uids) and its uid map (the tenant's own range), then it
    # keeps running (and ends on SIGTERM, which a pid 1 has to ask for).
    args = ["/bin/sh", "-c", "cat /proc/self/status /proc/self/uid_map; trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"]

    resources {
      memory = "32MiB"
      cpu    = 0.1
      pids   = 16
    }
  }
}
