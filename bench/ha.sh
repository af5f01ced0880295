#!/usr/bin/env bash
# bench/ha.sh — leader failover of three gateways on a three-member etcd
# cluster (loopback): ROUNDS (20) SIGKILLs of the leader, the time until a
# survivor leads (p50/p99/max) beside Patroni's documented defaults, and the
# client errors seen on the surviving gateways meanwhile (goal: 0).
# Needs etcd (apt-get install etcd-server) and PostgreSQL; builds release
# binaries. LEASE_TTL (whole seconds, default 1, the gateway's default) is
# [cluster] lease_ttl.
set -euo pipefail
SCRIPT_NAME=ha.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] || die "etcd is required (apt-get install etcd-server)"
build_release "${GATEWAY_BUILD[@]}"
OGEL_BIN="$CARGO_TARGET_DIR/release/ogel" exec "$CARGO_TARGET_DIR/release/ha-bench" \
    --rounds "${ROUNDS:-20}" --lease-ttl "${LEASE_TTL:-1}"
