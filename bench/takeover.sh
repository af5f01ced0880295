#!/usr/bin/env bash
# bench/takeover.sh — a database's takeover by its standby on another
# gateway: two gateways (a, b) on a three-member etcd cluster (loopback),
# one native database served by a with a synchronous standby on b's disk.
# ROUNDS (10) rounds of `ogel chaos run --scenario kill-gateway` under a
# writer (one row per transaction through a URL listing both gateways):
# the serving gateway kills itself with SIGKILL, its lease expires
# (LEASE_TTL), the standby's gateway takes the database over; then the
# killed gateway is started again on its data dir and its ports (it fences
# its orphaned old primary and becomes the new standby after a fresh base
# backup), and once that standby is in sync the next round kills the other
# gateway. Prints kill → first write acknowledged again (p50/p99/max)
# beside Patroni's documented defaults (ttl 30 s + loop_wait 10 s: 30–40 s
# to a new leader), acknowledged writes lost (goal 0), client errors, and
# the time from the restart to the standby in sync again.
#
# Needs etcd (apt-get install etcd-server) and PostgreSQL; builds release
# binaries. Environment: ROUNDS (10), LEASE_TTL ([cluster] lease_ttl, whole
# seconds, default 2 as in tests/tests/cluster_failover.rs), PG_BIN,
# CARGO_TARGET_DIR, OGEL_LOG (the gateways'), KEEP_TMP=1.
set -euo pipefail
SCRIPT_NAME=takeover.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-10}"
LEASE_TTL="${LEASE_TTL:-2}"
DB=bench
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number"
[[ "$LEASE_TTL" =~ ^[1-9][0-9]*$ ]] || die "LEASE_TTL must be whole seconds"
require_tools curl python3
ETCD="$(command -v etcd || true)"
[[ -n "$ETCD" ]] || { [[ -x /usr/bin/etcd ]] && ETCD=/usr/bin/etcd; } || die "etcd is required (apt-get install etcd-server)"
use_pg_bin pg_ctl initdb postgres
use_ref_user
build_release "${GATEWAY_BUILD[@]}"
OGEL="$CARGO_TARGET_DIR/release/ogel"

make_tmp ogel-takeover
NODES=(a b)
declare -A GW_PIDS=() GW_DIRS=() GW_LOGS=() PG_PORTS=() API_PORTS=() APIS=()
ETCD_PIDS=()

# Every postgres left under TMP (the orphaned primary of a killed gateway,
# or computes of a gateway that did not stop), by the pid in its
# postmaster.pid.
stop_computes_under_tmp() {
    local pidfile pid
    while IFS= read -r pidfile; do
        pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            echo "$SCRIPT_NAME: stopping a compute left running (pid $pid, $(dirname "$pidfile"))" >&2
            as_ref "$PG_BIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 \
                || kill -QUIT "$pid" 2>/dev/null
        fi
    done < <(find "$TMP" -name postmaster.pid -type f 2>/dev/null)
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local n i
    for n in "${NODES[@]}"; do
        if [[ -n "${GW_PIDS[$n]:-}" ]] && kill -0 "${GW_PIDS[$n]}" 2>/dev/null; then
            say "Stopping gateway $n (pid ${GW_PIDS[$n]}, SIGTERM; it stops its computes)"
            stop_pid "${GW_PIDS[$n]}" "gateway $n" TERM 60
        fi
    done
    stop_computes_under_tmp
    for i in "${!ETCD_PIDS[@]}"; do
        stop_pid "${ETCD_PIDS[$i]}" "etcd member m$i" TERM 10
    done
    if ((rc != 0)); then
        for n in "${NODES[@]}"; do
            if [[ -s "${GW_LOGS[$n]:-}" ]]; then
                echo "$SCRIPT_NAME: failed (exit $rc); last lines of gateway $n's log (${GW_LOGS[$n]}):" >&2
                tail -n 30 "${GW_LOGS[$n]}" >&2
            fi
        done
    fi
    remove_tmp
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_ports N: N distinct free loopback ports below the kernel's ephemeral
# range (fixed up front: etcd members and gateways come back on theirs, and
# a port from the ephemeral range may meanwhile become some connection's
# source port).
free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except Exception:
    low = 32768
lo, hi = (10000, low) if low > 12000 else (low // 2, low)
ports = set()
while len(ports) < int(sys.argv[1]):
    p = random.randrange(lo, hi)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    ports.add(p)
print(" ".join(map(str, ports)))
PY
}
read -r -a PORTS <<<"$(free_ports 10)"

# ------------------------------------------------------------------- etcd
# Three members, as tests/src/etcd.rs starts them: small timeouts so
# elections take well under a second, nothing from the environment.
for v in $(compgen -e); do [[ "$v" == ETCD_* ]] && unset "$v"; done
case "$(uname -m)" in
    x86_64) ;;
    aarch64) export ETCD_UNSUPPORTED_ARCH=arm64 ;;
    *) export ETCD_UNSUPPORTED_ARCH="$(uname -m)" ;;
esac
mkdir -p "$TMP/etcd"
INITIAL_CLUSTER="" ENDPOINTS=""
for i in 0 1 2; do
    INITIAL_CLUSTER+="${INITIAL_CLUSTER:+,}m$i=http://127.0.0.1:${PORTS[2 * i + 1]}"
    ENDPOINTS+="${ENDPOINTS:+,}\"http://127.0.0.1:${PORTS[2 * i]}\""
done
say "Starting a 3-member etcd cluster on loopback ($("$ETCD" --version | head -n 1))"
for i in 0 1 2; do
    client="http://127.0.0.1:${PORTS[2 * i]}" peer="http://127.0.0.1:${PORTS[2 * i + 1]}"
    "$ETCD" --name "m$i" --data-dir "$TMP/etcd/m$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$INITIAL_CLUSTER" --initial-cluster-state new \
        --initial-cluster-token "ogel-takeover-${TMP##*.}" \
        --heartbeat-interval 50 --election-timeout 500 \
        --quota-backend-bytes $((64 << 20)) --logger zap --log-level warn \
        >>"$TMP/etcd/m$i.log" 2>&1 </dev/null &
    ETCD_PIDS[i]=$!
done
for i in 0 1 2; do
    for ((t = 0; ; t++)); do
        kill -0 "${ETCD_PIDS[$i]}" 2>/dev/null || { tail -n 20 "$TMP/etcd/m$i.log" >&2; die "etcd member m$i exited"; }
        curl -sf "http://127.0.0.1:${PORTS[2 * i]}/health" 2>/dev/null | grep -q '"health":"true"' && break
        ((t < 600)) || die "etcd member m$i not healthy after 60 s (log: $TMP/etcd/m$i.log)"
        sleep 0.1
    done
done

# --------------------------------------------------------------- gateways
PG_PORTS[a]=${PORTS[6]} API_PORTS[a]=${PORTS[7]}
PG_PORTS[b]=${PORTS[8]} API_PORTS[b]=${PORTS[9]}
printf '' >"$TMP/empty.toml"

# start_node N: `ogel up` for gateway N on its data dir and its ports (the
# same on every start, so the URL that lists both stays right), in the
# cluster as N with lease TTL LEASE_TTL. Retries while it exits during
# start-up (its name may still be held by its old lease).
start_node() {
    local n="$1" attempt t
    GW_DIRS[$n]="$TMP/$n/data"
    GW_LOGS[$n]="$TMP/$n/gateway.log"
    APIS[$n]="http://127.0.0.1:${API_PORTS[$n]}"
    mkdir -p "${GW_DIRS[$n]}"
    for ((attempt = 1; attempt <= 20; attempt++)); do
        rm -f "${GW_DIRS[$n]}/gateway.json"
        printf -- '--- start %d of gateway %s at %s\n' "$attempt" "$n" "$(date +%T.%N)" >>"${GW_LOGS[$n]}"
        NO_COLOR=1 OGEL_NATIVE__PG_BIN="$PG_BIN" \
            OGEL_LOG="${OGEL_LOG:-warn,ogel=info,ogel_backend_native=info}" \
            OGEL_CLUSTER__ETCD="[$ENDPOINTS]" OGEL_CLUSTER__NODE_NAME="$n" \
            OGEL_CLUSTER__LEASE_TTL="${LEASE_TTL}s" \
            "$OGEL" up --data-dir "${GW_DIRS[$n]}" \
            --listen "127.0.0.1:${PG_PORTS[$n]}" --api "127.0.0.1:${API_PORTS[$n]}" \
            --config "$TMP/empty.toml" >>"${GW_LOGS[$n]}" 2>&1 </dev/null &
        GW_PIDS[$n]=$!
        for ((t = 0; t < 1200; t++)); do
            if [[ -s "${GW_DIRS[$n]}/gateway.json" ]] \
                && json_get .api <"${GW_DIRS[$n]}/gateway.json" >/dev/null 2>&1; then
                return 0
            fi
            kill -0 "${GW_PIDS[$n]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "${GW_PIDS[$n]}" 2>/dev/null && die "gateway $n did not write gateway.json within 120 s"
        wait "${GW_PIDS[$n]}" 2>/dev/null || true
        GW_PIDS[$n]=""
        warn "gateway $n exited during start-up (attempt $attempt); retrying in 0.5 s"
        sleep 0.5
    done
    die "gateway $n did not start (log: ${GW_LOGS[$n]})"
}

# api N METHOD PATH [JSON]: the API of gateway N with its admin token.
api() {
    local n="$1" method="$2" path="$3" body="${4:-}"
    curl -sS --fail-with-body -X "$method" "${APIS[$n]}$path" \
        -H "Authorization: Bearer $(cat "${GW_DIRS[$n]}/admin-token")" \
        -H 'Content-Type: application/json' ${body:+-d "$body"}
}
ogel_on() { local n="$1"; shift; "$OGEL" --data-dir "${GW_DIRS[$n]}" "$@"; }
other() { if [[ "$1" == a ]]; then echo b; else echo a; fi; }

# serving_node: the gateway serving DB, as b's (or a's) API says.
serving_node() {
    local n
    for n in "${NODES[@]}"; do
        kill -0 "${GW_PIDS[$n]:-0}" 2>/dev/null || continue
        api "$n" GET "/v1/databases/$DB" 2>/dev/null | json_get .node 2>/dev/null && return 0
    done
    return 1
}

# wait_in_sync SERVING STANDBY: until GET …/standby on SERVING shows the
# standby on STANDBY's disk, in sync and streaming (180 s at most).
wait_in_sync() {
    local serving="$1" standby="$2" last="" t
    for ((t = 0; t < 1800; t++)); do
        last="$(api "$serving" GET "/v1/databases/$DB/standby" 2>/dev/null || true)"
        if python3 -c 'import json,sys
v=json.loads(sys.argv[1]); sys.exit(0 if v.get("standby_gateway")==sys.argv[2] and v.get("in_sync") is True and (v.get("streaming") or 0)>0 else 1)' \
            "$last" "$standby" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "the standby on $standby is not in sync after 180 s: $last"
}

say "Starting gateways a and b (release, cluster lease TTL ${LEASE_TTL} s)"
start_node a
start_node b
for ((t = 0; ; t++)); do
    nodes="$(api b GET /v1/cluster 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("nodes") or []))' 2>/dev/null || echo 0)"
    [[ "$nodes" == 2 ]] && break
    ((t < 150)) || die "gateway b does not see both gateways after 15 s"
    sleep 0.1
done

say "Creating database $DB on a, a synchronous standby on b"
created="$(api a POST /v1/databases "{\"name\": \"$DB\", \"suspend_after_secs\": 0}")" \
    || die "creating $DB failed: $created"
CREDS="$(python3 -c 'import json,sys
from urllib.parse import urlsplit
u=urlsplit(json.loads(sys.argv[1])["url"]); print(u.netloc.rsplit("@",1)[0])' "$created")"
# Both gateways, on the ports they always come back on.
URL="postgresql://$CREDS@127.0.0.1:${PG_PORTS[a]},127.0.0.1:${PG_PORTS[b]}/$DB"
ogel_on a db standby "$DB" add >/dev/null
wait_in_sync a b
ogel_on b chaos allow "$DB" >/dev/null

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
say "$ROUNDS × kill-gateway (writer: $(mask_url "$URL"))"
for ((round = 1; round <= ROUNDS; round++)); do
    victim="$(serving_node)" || die "round $round: no gateway says which one serves $DB"
    survivor="$(other "$victim")"
    old_primary="$(api "$victim" GET "/v1/databases/$DB" | json_get .compute.pid 2>/dev/null || true)"
    out="$TMP/round-$round.json" err="$TMP/round-$round.err"
    rc=0
    ogel_on "$survivor" chaos run --db "$DB" --scenario kill-gateway --url "$URL" --json \
        >"$out" 2>"$err" || rc=$?
    line="$(tail -n 1 "$out")"
    if [[ -z "$line" ]]; then
        cat "$err" >&2
        die "round $round: kill-gateway of $victim printed no report (exit $rc)"
    fi
    ((rc == 0)) || warn "round $round: ogel chaos run exited $rc: $(tail -n 1 "$err")"
    # The killed gateway is our child: reap it.
    for ((t = 0; t < 100; t++)); do kill -0 "${GW_PIDS[$victim]}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${GW_PIDS[$victim]}" 2>/dev/null && die "round $round: gateway $victim is still running after kill-gateway"
    wait "${GW_PIDS[$victim]}" 2>/dev/null || true
    GW_PIDS[$victim]=""
    now_serving="$(serving_node)" || die "round $round: $survivor does not say who serves $DB"
    [[ "$now_serving" == "$survivor" ]] || die "round $round: $DB is served by \"$now_serving\" after $victim died, not by $survivor"
    # The killed one back on its data dir: it fences its old primary and
    # becomes the standby (a fresh base backup), in sync again.
    back=$(date +%s%N)
    start_node "$victim"
    wait_in_sync "$survivor" "$victim"
    resync_ms=$((($(date +%s%N) - back) / 1000000))
    fenced=null
    if [[ "$old_primary" =~ ^[0-9]+$ ]]; then
        fenced=true
        kill -0 "$old_primary" 2>/dev/null && fenced=false
    fi
    python3 -c 'import json,sys
r=json.loads(sys.argv[1]); r.update(round=int(sys.argv[2]), killed=sys.argv[3], took_over=sys.argv[4], resync_ms=int(sys.argv[5]), old_primary_fenced=json.loads(sys.argv[6]))
print(json.dumps(r))' "$line" "$round" "$victim" "$survivor" "$resync_ms" "$fenced" >>"$RESULTS"
    python3 -c 'import json,sys
r=json.loads(sys.argv[1])
print("round %2d: killed %s, %s took over: writes acknowledged again after %s ms; lost %d of %d; client errors %d; %s back, standby in sync after %.1f s; old primary fenced: %s" % (
  r["round"], r["killed"], r["took_over"], r["recovered_ms"], r["lost"], r["acknowledged"], r["client_errors"], r["killed"], r["resync_ms"]/1000, {True: "yes", False: "NO", None: "unknown"}[r["old_primary_fenced"]]), file=sys.stderr)' "$(tail -n 1 "$RESULTS")"
done

python3 - "$RESULTS" "$ROUNDS" "$LEASE_TTL" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
rec = [r["recovered_ms"] for r in rows if r["recovered_ms"] is not None]
never = len(rows) - len(rec)
print(f"\ntakeover.sh — {sys.argv[2]} kill-gateway rounds, 2 gateways + 3-member etcd, loopback; lease TTL {sys.argv[3]} s; synchronous standby on the other gateway")
if rec:
    p50, p99, mx = pct(rec, 50), pct(rec, 99), max(rec)
    print(f"gateway SIGKILL → write acked      p50 {p50/1000:6.2f} s  p99 {p99/1000:6.2f} s  max {mx/1000:6.2f} s" + (f"  ({never} rounds never recovered)" if never else "") + ("  (p99 of fewer than 100 rounds: the max)" if len(rec) < 100 else ""))
    print(f"  vs Patroni defaults (ttl 30 s + loop_wait 10 s: 30–40 s to a new leader):")
    print(f"    Patroni 30 s ÷ ours p99 = {30000/p99:.1f}×   Patroni 40 s ÷ ours p99 = {40000/p99:.1f}×   (÷ p50: {30000/p50:.1f}–{40000/p50:.1f}×)")
else:
    print("gateway SIGKILL → write acked      never, in any round")
lost = sum(r["lost"] for r in rows)
acked = sum(r["acknowledged"] for r in rows)
errs = [r["client_errors"] for r in rows]
print(f"acknowledged writes lost: {lost} of {acked} (goal 0)")
print(f"client errors: {sum(errs)} in all (per round p50 {pct(errs, 50)}, max {max(errs)})")
resync = [r["resync_ms"] for r in rows]
print(f"killed gateway restarted → its standby in sync again: p50 {pct(resync, 50)/1000:.1f} s, max {max(resync)/1000:.1f} s")
fenced = [r["old_primary_fenced"] for r in rows]
print(f"orphaned old primary stopped once its gateway was back: {sum(1 for f in fenced if f is True)} of {len(rows)}")
PY
