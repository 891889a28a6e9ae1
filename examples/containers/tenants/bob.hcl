tenant "bob" {
  instance "box" {
    runtime = "containerd"
    image   = "127.0.0.1:5099/kigumi/example-busybox:1"
    # What the container shows of itself: its status (CapEff, NoNewPrivs,
    # Seccomp, the uids) and its uid map (the tenant's own range), then it
    # keeps running (and ends on SIGTERM, which a pid 1 has to ask for).
    args = ["/bin/sh", "-c", "cat /proc/self/status /proc/self/uid_map; trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"]

    # bob's own containerd runs inside his cgroup and counts against his
    # totals, which are the sums of his instances' limits: these leave the
    # daemon about 100 MiB and 100 threads besides the container's.
    resources {
      memory = "160MiB"
      cpu    = 0.5
      pids   = 128
    }
  }
}
