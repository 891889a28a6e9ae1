# Containers: nothing runs privileged or sees the host's files.

policy "no-privileged" {
  description = "No instance runs privileged: a privileged container holds every capability and the host's devices, so its tenant owns the host."
  scope       = "instance"
  enforcement = "deny"
  rule        = "!has(instance.settings.privileged) || instance.settings.privileged != true"
  message     = "privileged mode is refused: a privileged container can take over the host and every other tenant. Remove settings.privileged."
}

policy "no-host-paths-in-containers" {
  description = "A container sees no directory of the host: only its own image, /tmp and its state."
  scope       = "instance"
  enforcement = "deny"
  match       = "instance.runtime == 'containerd'"
  rule        = "instance.mounts.size() == 0 && instance.stdin == '' && !has(instance.settings.host_paths)"
  message     = "host paths are refused in containers: a container sees only its image, /tmp and its state. Remove the mount, stdin and settings.host_paths, and build what the workload needs into its image."
}
