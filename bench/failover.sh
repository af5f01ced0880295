#!/usr/bin/env bash
# bench/failover.sh — compute failover on the native backend: ROUNDS (20)
# kill -9s of a database's primary under a writer (one row per
# transaction through the gateway, every acknowledged id checked after),
# then ROUNDS planned switchovers, then PARTITION_ROUNDS (5) partitions
# between gateway and primary (the probes time out: probe_timeout 2 s ×
# probe_failures 3). Prints, from `ogel chaos run --json`:
# kill → first write acknowledged again (p50/p99/max, goal p99 ≤ 3 s) beside
# Patroni's documented defaults (ttl 30 s + loop_wait 10 s: 30–40 s) and RDS
# Multi-AZ (60–120 s, AWS's documentation); the switchover's write pause
# (goal ≤ 1 s); acknowledged writes lost (goal 0) and client errors.
#
# Environment: ROUNDS (20), PARTITION_ROUNDS (5), PG_BIN, CARGO_TARGET_DIR,
# KEEP_TMP=1.
set -euo pipefail
SCRIPT_NAME=failover.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-20}"
PARTITION_ROUNDS="${PARTITION_ROUNDS:-5}"
require_tools curl python3
use_pg_bin pg_ctl initdb postgres
use_ref_user
build_release "${GATEWAY_BUILD[@]}"
OGEL="$CARGO_TARGET_DIR/release/ogel"

make_tmp ogel-failover
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_gateway "it stops its computes"
    stop_left_computes
    show_gateway_log "$rc"
    remove_tmp
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

printf '' >"$TMP/empty.toml"
start_gateway "$TMP/empty.toml" warn
ogel() { "$OGEL" --data-dir "$GW_DIR" "$@"; }
create_database '{"name": "bench", "suspend_after_secs": 0}' >/dev/null
ogel chaos allow bench >/dev/null
say "Adding a synchronous standby"
ogel db standby bench add

RESULTS="$TMP/results.jsonl"
for scenario in kill-primary switchover partition-gateway; do
    rounds=$ROUNDS
    [ "$scenario" = partition-gateway ] && rounds=$PARTITION_ROUNDS
    say "$rounds × $scenario"
    for ((i = 1; i <= rounds; i++)); do
        ogel chaos run --db bench --scenario "$scenario" --json >>"$RESULTS"
        printf '.' >&2
    done
    printf '\n' >&2
done

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
def line(name, xs, goal_ms, refs):
    p50, p99, mx = pct(xs, 50), pct(xs, 99), max(xs)
    print(f"{name:<34} p50 {p50/1000:6.2f} s  p99 {p99/1000:6.2f} s  max {mx/1000:6.2f} s  (goal p99 ≤ {goal_ms/1000:g} s: {'met' if p99 <= goal_ms else 'NOT met'})")
    for ref, lo, hi in refs:
        print(f"  vs {ref:<30} {lo:>4}–{hi:<4} s: {lo*1000/p99:6.1f}–{hi*1000/p99:.1f}× faster at p99")
kills = [r for r in rows if r["scenario"] == "kill-primary"]
switch = [r for r in rows if r["scenario"] == "switchover"]
print(f"\nfailover.sh — {sys.argv[2]} rounds each, native backend, synchronous standby, one gateway, loopback")
line("kill -9 primary → write acked", [r["recovered_ms"] for r in kills], 3000,
     [("Patroni defaults (ttl+loop_wait)", 30, 40), ("RDS Multi-AZ (AWS docs)", 60, 120)])
line("switchover write pause (gateway)", [r["write_pause_ms"] for r in switch], 1000, [])
line("switchover → write acked", [r["recovered_ms"] for r in switch], 1000, [])
cuts = [r for r in rows if r["scenario"] == "partition-gateway"]
if cuts:
    line("partition → write acked", [r["recovered_ms"] for r in cuts], 10000,
         [("Patroni defaults (ttl+loop_wait)", 30, 40)])
lost = sum(r["lost"] for r in rows)
acked = sum(r["acknowledged"] for r in rows)
errors = [r["client_errors"] for r in kills]
print(f"acknowledged writes lost: {lost} of {acked} (goal 0)")
print(f"client errors per kill: p50 {pct(errors, 50)}, max {max(errors)}; per switchover: max {max(r['client_errors'] for r in switch)}")
PY
