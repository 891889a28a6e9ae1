# Opt-in: every image and image archive is pinned by digest. List this file
# in the host spec's policies to use it.

policy "image-digest" {
  description = "Every image and archive is pinned by digest, so a registry, tag or file that changes cannot change what runs."
  scope       = "instance"
  enforcement = "deny"
  match       = "instance.artifact == 'image' || instance.artifact == 'archive'"
  rule        = "instance.digest.startsWith('sha256:') || instance.image.contains('@sha256:')"
  message_expr = "instance.artifact + ' ' + instance.image + instance.archive + ' is not pinned: add digest = \"sha256:...\" (skopeo inspect shows it)'"
}
