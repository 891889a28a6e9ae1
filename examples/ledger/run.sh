#!/usr/bin/env bash
# The whole lease market on one machine (make run-ledger): the fake ledger,
# a TEST DOUBLE of rippled; a host agent that registers with the registry
# and offers leases; a tenant who acquires one with `kigumi lease acquire`.
# Wallets are made here, never committed. Run as root, after make build.
set -euo pipefail
cd "$(dirname "$0")"
K=../../bin/kigumi
FAKE=../../bin/fakeledger
B=build
HOSTDIR=/var/lib/kigumi/ledger-example-host
ENDPOINT=ws://127.0.0.1:6006
REGISTRY=$(sed -n 's/^ *registry *= *"\(r[^"]*\)".*/\1/p' host.hcl)

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

mkdir -p "$B"
install -d -m 0700 "$HOSTDIR"
[ -f "$HOSTDIR/host.secret" ] || $K lease wallet --new "$HOSTDIR/host.secret" >/dev/null
[ -f "$B/tenant.wallet" ] || $K lease wallet --new "$B/tenant.wallet" >/dev/null
HOST=$($K lease wallet "$HOSTDIR/host.secret")
TENANT=$($K lease wallet "$B/tenant.wallet")
echo "host account:     $HOST (secret in $HOSTDIR/host.secret)"
echo "tenant account:   $TENANT (wallet in examples/ledger/$B/tenant.wallet)"
echo "registry account: $REGISTRY"

if running "$B/fakeledger.pid"; then
	echo "The fake ledger (a test double) already runs (pid $(cat "$B/fakeledger.pid"))."
else
	nohup $FAKE -listen 127.0.0.1:6006 -close 1s -fund "$HOST,$TENANT,$REGISTRY" >"$B/fakeledger.log" 2>&1 &
	echo $! >"$B/fakeledger.pid"
	for _ in $(seq 50); do grep -q "listening" "$B/fakeledger.log" 2>/dev/null && break; sleep 0.1; done
	head -1 "$B/fakeledger.log"
fi

if running "$B/agent.pid"; then
	echo "The host agent already runs (pid $(cat "$B/agent.pid"))."
else
	$K validate -c host.hcl
	nohup $K agent -c host.hcl >"$B/agent.log" 2>&1 &
	echo $! >"$B/agent.pid"
	echo "Started the host agent (log: examples/ledger/$B/agent.log)."
fi

echo
echo "Waiting for the host's heartbeat and lease offers..."
for _ in $(seq 60); do
	$K lease offers --endpoint $ENDPOINT --host "$HOST" 2>/dev/null | grep -q '^  offer ' && break
	sleep 1
done
$K lease offers --endpoint $ENDPOINT --registry "$REGISTRY"

echo
echo "$ kigumi lease acquire --host $HOST --spec tenant.hcl ..."
$K lease acquire --endpoint $ENDPOINT --wallet "$B/tenant.wallet" --host "$HOST" --spec tenant.hcl | tee "$B/acquire.out"
NAME=$(sed -n 's/^tenant: *//p' "$B/acquire.out")

echo
echo "$ kigumi lease status"
$K lease status --endpoint $ENDPOINT --wallet "$B/tenant.wallet"

echo
echo "$ kigumi logs $NAME/app   (the instance the tenant got)"
for _ in $(seq 30); do $K logs -c host.hcl "$NAME/app" 2>/dev/null | grep -q . && break; sleep 0.5; done
$K logs -c host.hcl "$NAME/app"
echo
echo "The market runs in the background. 'make stop-ledger' removes all of it."
