# Opt-in: every image is pinned by digest. List this file in the host spec's
# policies to use it.

policy "image-digest" {
  description = "Every image is pinned by digest, so a registry or tag that changes cannot change what runs."
  scope       = "instance"
  enforcement = "deny"
  match       = "instance.image != ''"
  rule        = "instance.digest.startsWith('sha256:') || instance.image.contains('@sha256:')"
  message_expr = "'image ' + instance.image + ' is not pinned: add digest = \"sha256:...\" (skopeo inspect shows it)'"
}
