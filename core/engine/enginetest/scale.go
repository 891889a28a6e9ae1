package enginetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TenantName is the name of the i-th tenant of a host WriteHost wrote.
func TenantName(i int) string { return fmt.Sprintf("bench%04d", i) }

// WriteHost writes a host spec of tenants tenants, perTenant instances each,
// under dir: host.hcl, one tenant file each in tenants/ and a module in
// artifacts/, with the policies in policyDir. The instances look like the
// quickstart's, with state and permissions, about 350 bytes of spec each.
// It returns the host spec's path.
func WriteHost(dir, policyDir string, tenants, perTenant int) (string, error) {
	for _, d := range []string{"tenants", "artifacts", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "artifacts", "app.wasm"), []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		return "", err
	}
	host := filepath.Join(dir, "host.hcl")
	n := tenants * perTenant
	src := fmt.Sprintf(`host "bench" {
  state_dir     = %q
  artifacts_dir = %q
  policies      = [%q]
  capacity {
    cpu       = %d
    memory    = "%dGiB"
    disk      = "%dGiB"
    instances = %d
  }
  isolation {
    tenant_users = true
    uid_base     = 70000
    subid_base   = 1600000000
  }
  tenants {
    dir = "tenants"
  }
}
runtime "wasm" {}
statefs "fuse" {}
`, filepath.Join(dir, "state"), filepath.Join(dir, "artifacts"), policyDir, max(2, n/4), max(2, n/8), max(2, n/8), max(1, n))
	if err := os.WriteFile(host, []byte(src), 0o644); err != nil {
		return "", err
	}
	for i := range tenants {
		if err := WriteTenant(filepath.Join(dir, "tenants"), TenantName(i), perTenant, "Hello"); err != nil {
			return "", err
		}
	}
	return host, nil
}

// WriteTenant writes the spec file of tenant name, with perTenant instances
// whose environment holds greeting, into the tenant directory dir, through a
// rename so that a watcher never reads it half written.
func WriteTenant(dir, name string, perTenant int, greeting string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "tenant %q {\n", name)
	for j := range perTenant {
		fmt.Fprintf(&b, `  instance "app%02d" {
    runtime = "wasm"
    module  = "../artifacts/app.wasm"
    args    = ["--name", %q, "--interval", "5s"]
    env     = { GREETING = %q }
    resources {
      memory = "64MiB"
      cpu    = 0.1
      pids   = 32
    }
    state {
      size = "16MiB"
    }
    permissions = ["state.write"]
  }
`, j, name, greeting)
	}
	b.WriteString("}\n")
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name+".hcl"))
}
