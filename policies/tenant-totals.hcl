# Tenant totals: no single tenant may take more than half of the host's
# memory or CPU, so that one tenant can never crowd out all the others.

policy "tenant-memory-at-most-half" {
  description  = <<-EOT
    A tenant's instances together may ask for at most half of the host's
    memory. Half leaves room for at least one other tenant of the same size
    and keeps a single tenant from pushing the host into reclaim for everyone.
  EOT
  scope        = "tenant"
  enforcement  = "deny"
  rule         = "tenant.totals.memory <= host.capacity.memory / 2"
  message_expr = "'tenant asks for ' + string(tenant.totals.memory) + ' bytes of memory in total, more than half of the ' + string(host.capacity.memory) + ' the host has'"
}

policy "tenant-cpu-at-most-half" {
  description  = <<-EOT
    A tenant's instances together may ask for at most half of the host's CPU,
    so that other tenants keep at least the other half under contention.
  EOT
  scope        = "tenant"
  enforcement  = "deny"
  rule         = "tenant.totals.cpu <= host.capacity.cpu / 2.0"
  message_expr = "'tenant asks for ' + string(tenant.totals.cpu) + ' cores in total, more than half of the ' + string(host.capacity.cpu) + ' the host has'"
}
