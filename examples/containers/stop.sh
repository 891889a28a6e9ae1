#!/usr/bin/env bash
# Removes what run.sh made (make stop-containers): the tenants (their
# containers, users, cgroups and state), containerd and its shims, the
# registry, their directories and every mount below them.
set -uo pipefail
cd "$(dirname "$0")"
K=../../bin/kigumi
B=build
DIR=/var/lib/kigumi/containers-example

stop() {
	[ -f "$1" ] || return 0
	local pid
	pid=$(cat "$1")
	if kill "$pid" 2>/dev/null; then
		while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
	fi
	rm -f "$1"
}

if [ -f "$DIR/kigumi/kigumi.db" ]; then
	$K destroy -c host.hcl --auto-approve
fi
# Containers that no tenant holds any more (an interrupted apply): their
# tasks end with containerd's namespace.
if [ -S "$DIR/containerd/ctd.sock" ]; then
	for c in $(ctr -a "$DIR/containerd/ctd.sock" -n kigumi-example containers ls -q 2>/dev/null); do
		ctr -a "$DIR/containerd/ctd.sock" -n kigumi-example tasks kill -s KILL "$c" 2>/dev/null
		ctr -a "$DIR/containerd/ctd.sock" -n kigumi-example tasks rm -f "$c" 2>/dev/null
		ctr -a "$DIR/containerd/ctd.sock" -n kigumi-example containers rm "$c" 2>/dev/null
	done
fi
stop "$B/containerd.pid"
stop "$B/registry.pid"
# Deepest first: the snapshotters' and shims' mounts below the directory.
grep -o " $DIR/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
rm -rf "$DIR" "$B"
echo "The containers example is gone."
