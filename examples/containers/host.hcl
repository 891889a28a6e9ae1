# The containers example: two tenants, each running a container of an
# image built from Debian packages, one per daemon mode: alice on the
# example's own root containerd (shared mode: her containers in a user
# namespace mapped to her own subordinate range), bob on his own rootless
# containerd (per-tenant mode). `make run-containers`
# starts containerd and a registry, builds and pushes the image, applies
# this host; `make stop-containers` removes all of it.

host "containers-example" {
  state_dir = "/var/lib/kigumi/containers-example/kigumi"
  policies  = ["../../policies"]

  capacity {
    cpu       = 2
    memory    = "2GiB"
    disk      = "10GiB"
    instances = 8
  }

  isolation {
    tenant_users = true
  }

  tenants {
    dir = "tenants"
  }
}

# The example's containerd, started by run.sh (not the system one), is
# alice's: the shared mode. bob gets a rootless containerd of his own,
# running as his user, started on his first container and stopped when he
# is destroyed: the per-tenant mode. The registry on 127.0.0.1 is plain
# HTTP, which loopback registries may be.
# Each instance's state is a FUSE filesystem served from the host, with
# its quota; the containers see it at /state and never /dev/fuse.
statefs "fuse" {}

runtime "containerd" {
  address   = "/var/lib/kigumi/containers-example/containerd/ctd.sock"
  namespace = "kigumi-example"
  tmp_size  = "16MiB"
  daemons   = { bob = "per-tenant" }
}
