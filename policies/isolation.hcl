# Isolation: tenants are bound to their own Linux users.

policy "tenant-users-on" {
  description = "Each tenant's workloads should run as the tenant's own Linux user (isolation.tenant_users = true)."
  scope       = "host"
  enforcement = "warn"
  rule        = "host.isolation.tenant_users"
  message     = "isolation.tenant_users is off: all tenants' workloads run as one Linux user, so a workload that escapes its runtime can read, change and signal every other tenant's processes and files. Turn it on for any host shared by tenants who do not trust each other."
}
