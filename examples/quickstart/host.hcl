# The quickstart host: two tenants, each bound to its own Linux user, each
# running a WebAssembly instance. `make run` applies it.

host "quickstart" {
  state_dir = "/var/lib/kigumi/quickstart"
  policies  = ["../../policies"]

  capacity {
    cpu       = 2
    memory    = "2GiB"
    disk      = "10GiB"
    instances = 16
  }

  isolation {
    tenant_users = true
  }

  tenants {
    dir = "tenants"
  }
}

# The wasm runtime (wazero), compiled into bin/kigumi, run out of process.
runtime "wasm" {
  compiler = "compiler"
}

# Per-instance state: a FUSE filesystem each, served from the host, that
# enforces state.size (plain directories, with a warning, where /dev/fuse
# is unavailable; mode = "directory" asks for them).
statefs "fuse" {}
