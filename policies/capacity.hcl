# Capacity: no single instance may ask for more than the host has, and the
# desired instances of all tenants together must fit on the host.

policy "instance-memory-within-capacity" {
  description  = "An instance may not ask for more memory than the host has."
  scope        = "instance"
  enforcement  = "deny"
  rule         = "instance.resources.memory <= host.capacity.memory"
  message_expr = "'instance asks for ' + string(instance.resources.memory) + ' bytes of memory; the host has ' + string(host.capacity.memory)"
}

policy "instance-disk-within-capacity" {
  description  = "An instance may not ask for more disk, including its state, than the host has."
  scope        = "instance"
  enforcement  = "deny"
  rule         = "instance.resources.disk + instance.state_size <= host.capacity.disk"
  message_expr = "'instance asks for ' + string(instance.resources.disk) + ' bytes of disk and ' + string(instance.state_size) + ' bytes of state; the host has ' + string(host.capacity.disk)"
}

policy "instance-cpu-within-capacity" {
  description  = "An instance may not ask for more CPU than the host has."
  scope        = "instance"
  enforcement  = "deny"
  rule         = "instance.resources.cpu <= host.capacity.cpu"
  message_expr = "'instance asks for ' + string(instance.resources.cpu) + ' cores; the host has ' + string(host.capacity.cpu)"
}

policy "host-memory-allocated-within-capacity" {
  description  = "All desired instances together may not ask for more memory than the host has."
  scope        = "host"
  enforcement  = "deny"
  rule         = "host.allocated.memory <= host.capacity.memory"
  message_expr = "'instances ask for ' + string(host.allocated.memory) + ' bytes of memory in total; the host has ' + string(host.capacity.memory)"
}

policy "host-cpu-allocated-within-capacity" {
  description  = "All desired instances together may not ask for more CPU than the host has."
  scope        = "host"
  enforcement  = "deny"
  rule         = "host.allocated.cpu <= host.capacity.cpu"
  message_expr = "'instances ask for ' + string(host.allocated.cpu) + ' cores in total; the host has ' + string(host.capacity.cpu)"
}

policy "host-disk-allocated-within-capacity" {
  description  = "All desired instances together, with their state, may not ask for more disk than the host has."
  scope        = "host"
  enforcement  = "deny"
  rule         = "host.allocated.disk + host.allocated.state <= host.capacity.disk"
  message_expr = "'instances ask for ' + string(host.allocated.disk) + ' bytes of disk and ' + string(host.allocated.state) + ' bytes of state in total; the host has ' + string(host.capacity.disk)"
}

policy "host-instances-within-capacity" {
  description  = "There may be no more desired instances than the host's capacity.instances."
  scope        = "host"
  enforcement  = "deny"
  rule         = "host.allocated.instances <= host.capacity.instances"
  message_expr = "string(host.allocated.instances) + ' instances are desired; the host allows ' + string(host.capacity.instances)"
}
