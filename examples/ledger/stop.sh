#!/usr/bin/env bash
# Removes what run.sh started (make stop-ledger): the host agent, the
# lease tenants (their users, cgroups and state), the fake ledger, the
# wallets and the state.
set -uo pipefail
cd "$(dirname "$0")"
K=../../bin/kigumi
B=build

stop() {
	[ -f "$1" ] || return 0
	local pid
	pid=$(cat "$1")
	if kill "$pid" 2>/dev/null; then
		while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
	fi
	rm -f "$1"
}

stop "$B/agent.pid"
if [ -f /var/lib/kigumi/ledger-example/kigumi.db ]; then
	$K destroy -c host.hcl --auto-approve
fi
stop "$B/fakeledger.pid"
rm -rf /var/lib/kigumi/ledger-example /var/lib/kigumi/ledger-example-host "$B"
echo "The ledger example is gone."
