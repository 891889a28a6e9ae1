#!/usr/bin/env bash
# Builds a small OCI image from Debian packages, with no base image: the
# packages' files are unpacked with dpkg-deb into one layer by umoci.
#
#   build.sh LAYOUT TAG [REF]
#
# LAYOUT is the OCI image layout directory to create (or add TAG to), TAG
# the image's tag in it. With REF (such as 127.0.0.1:5000/busybox:1), the
# image is also copied to that plain-HTTP registry with skopeo.
#
# The image holds busybox-static (/bin/busybox and a link for each of its
# applets), an /etc/passwd with root and the workload user 10000, and
# PATH in its config. PACKAGES, when set, lists the packages to unpack
# instead of busybox-static.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: build.sh LAYOUT TAG [REF]" >&2
  exit 2
fi
layout=$1 tag=$2 ref=${3:-}
packages=${PACKAGES:-busybox-static}

work=$(mktemp -d)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT

# apt-get download writes into the current directory, as the _apt user
# when it can: the directory must be writable for it.
mkdir "$work/debs"
chmod 0777 "$work/debs"
(cd "$work/debs" && apt-get download -qq $packages)

[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$rootfs"
done
# Drop the package documentation; the workload needs none of it.
rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man"

if [ -x "$rootfs/bin/busybox" ]; then
  for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
  done
fi
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/state" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
workload:x:10000:10000:workload:/state:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
workload:x:10000:
nogroup:x:65534:
GROUP

umoci repack --image "$layout:$tag" "$work/bundle" >/dev/null
umoci config --image "$layout:$tag" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd /bin/sh --config.workingdir /
umoci gc --layout "$layout"

if [ -n "$ref" ]; then
  skopeo copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://$ref"
fi
