#!/usr/bin/env bash
# Brings up the containers example (make run-containers): a registry
# (Debian's docker-registry on 127.0.0.1:5099) and a containerd of the
# example's own, both with their config and data below $DIR; the image
# built from Debian packages by the runtime's image/build.sh and pushed;
# then kigumi applies host.hcl and shows each container's uid_map. Run as
# root, after make build.
set -euo pipefail
cd "$(dirname "$0")"
K=../../bin/kigumi
B=build
DIR=/var/lib/kigumi/containers-example
REGISTRY=127.0.0.1:5099
IMAGE=$REGISTRY/kigumi/example-busybox:1

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# detach runs a daemon in its own session with no descriptor but stdio of
# this script's: an inherited lock (flock around make) would stay held.
detach() {
	local fd
	for fd in $(ls /proc/$BASHPID/fd); do
		[ "$fd" -gt 2 ] && eval "exec $fd>&-"
	done
	exec setsid "$@"
}
answers() { (exec 3<>"/dev/tcp/${REGISTRY%:*}/${REGISTRY#*:}") 2>/dev/null; }

mkdir -p "$B"
# Container root (a subordinate uid) must traverse containerd's state dir.
install -d -m 0711 "$DIR" "$DIR/containerd"

if running "$B/registry.pid"; then
	echo "The registry already runs (pid $(cat "$B/registry.pid"))."
else
	if answers; then
		echo "$REGISTRY is taken by another program." >&2
		exit 1
	fi
	cat >"$DIR/registry.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry
http:
  addr: $REGISTRY
CFG
	(detach docker-registry serve "$DIR/registry.yml" </dev/null >"$B/registry.log" 2>&1) &
	echo $! >"$B/registry.pid"
	for _ in $(seq 50); do answers && break; sleep 0.1; done
	answers
	echo "Started the registry on $REGISTRY (log: examples/containers/$B/registry.log)."
fi

if ! skopeo inspect -q --tls-verify=false "docker://$IMAGE" >/dev/null 2>&1; then
	echo "Building $IMAGE from Debian packages (busybox-static)..."
	bash ../../plugins/runtime-containerd/image/build.sh "$B/layout" 1 "$IMAGE"
fi

if running "$B/containerd.pid"; then
	echo "containerd already runs (pid $(cat "$B/containerd.pid"))."
else
	cat >"$DIR/containerd/config.toml" <<CFG
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$DIR/containerd/ctd.sock"

[ttrpc]
  address = "$DIR/containerd/ctd.sock.ttrpc"
CFG
	(detach containerd --config "$DIR/containerd/config.toml" </dev/null >"$B/containerd.log" 2>&1) &
	echo $! >"$B/containerd.pid"
	for _ in $(seq 100); do ctr -a "$DIR/containerd/ctd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
	ctr -a "$DIR/containerd/ctd.sock" version >/dev/null
	echo "Started containerd on $DIR/containerd/ctd.sock (log: examples/containers/$B/containerd.log)."
fi

$K validate -c host.hcl
$K apply -c host.hcl --auto-approve
$K status -c host.hcl
for t in alice bob; do
	echo
	echo "$ kigumi logs $t/box   (its ids, capabilities, no_new_privs, seccomp, uid_map and state)"
	for _ in $(seq 30); do $K logs -c host.hcl "$t/box" 2>/dev/null | grep -q '^ *0 ' && break; sleep 0.2; done
	$K logs -c host.hcl "$t/box" | grep -E '^(Uid|Gid|CapEff|NoNewPrivs|Seccomp|state):|^ +[0-9]+ +[0-9]+ +[0-9]+$'
done
echo
echo "The containers keep running. 'make stop-containers' removes all of it."
