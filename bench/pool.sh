#!/usr/bin/env bash
# bench/pool.sh — connection pooling, side by side against ONE Postgres
# server: direct connections vs PgBouncer (transaction mode) vs the ogel
# gateway (transaction mode, same pool size).
#
# Starts a reference Postgres (initdb as an unprivileged user, SCRAM auth,
# superuser "admin", loopback on a free port, max_connections 200), a
# PgBouncer with its own ini in front of it (SCRAM pass-through: its
# auth_file holds admin's SCRAM secret copied from the server), and
# `ogel up` with the example `external` backend plugin fronting the same
# server. Database "bench" is created through the gateway's API and
# initialised with `pgbench -i` through the gateway (so its tables belong to
# the database's owner role); the direct and PgBouncer sides log in as admin.
#
# Workloads, each on direct / PgBouncer / gateway:
#   1. pgbench -S              select-only, simple protocol
#      and again with twice the clients (64 by default)
#   2. pgbench -S -C           a new connection per transaction
#      (and on the gateway again with a token URL: no SCRAM exchange)
#   3. pgbench -S -M extended  extended protocol, unnamed statements
#   4. pgbench -S -M prepared  prepared statements (PgBouncer needs >= 1.21
#                              and max_prepared_statements; older: n/a)
#   5. IDLE_CLIENTS idle, authenticated connections held open by
#      `idle-clients`: RSS of the pgbouncer and the gateway process before
#      and while holding them (direct: n/a, max_connections is 200), and on
#      the gateway again over TLS
# and a table of TPS, average latency and ratios at the end. While each
# pgbench run goes, the server-side connections to "bench" of that side are
# sampled every second (direct ones carry their own application_name, the
# gateway's log in as the owner role); the peak is shown, with a warning if
# a pooler goes over POOL_SIZE. If `pgbench -i` through the gateway fails,
# the data is initialised directly (SELECT granted to the owner) so the
# other columns still come out, and the gateway's cells read "fail".
# The exit status is non-zero if any run or idle connection failed.
# Raw pgbench output is kept in the temp dir (see KEEP_TMP).
#
# Installs pgbouncer with apt-get if it is missing (root only). Builds
# release binaries. The gateway, pgbouncer, the reference postgres, every
# benchmark process and the temp dir are always cleaned up.
#
# Environment:
#   PG_BIN            Postgres bin dir (default: `pg_config --bindir`, else the
#                     newest /usr/lib/postgresql/*/bin): initdb, pg_ctl,
#                     postgres, psql, pgbench; the gateway uses it too
#   PGBOUNCER         pgbouncer binary (default: from PATH, else /usr/sbin)
#   DURATION          seconds per pgbench run (default 10)
#   CLIENTS           pgbench clients, -c (default 32)
#   JOBS              pgbench threads, -j (default 2)
#   POOL_SIZE         server connections per pool, PgBouncer and gateway
#                     alike (default 8)
#   SCALE             pgbench -i scale factor (default 10)
#   WARMUP            seconds of unmeasured direct `pgbench -S` first (default 3)
#   IDLE_CLIENTS      idle connections for workload 4 (default 10000; 0 skips it)
#   IDLE_CONCURRENCY  connection attempts in flight while opening them (default 64)
#   WORKLOADS         the pgbench workloads to run, space-separated (default
#                     "simple wide connect token extended prepared"; "none":
#                     only the idle clients)
#   SKIP_GATEWAY=1    leave the gateway out (no build of it, no gateway column)
#   CARGO_TARGET_DIR  default /var/tmp/ogel-target
#   EXT_TARGET_DIR    target dir of the external plugin, a separate cargo
#                     workspace (default /var/tmp/ogel-examples-target)
#   KEEP_TMP=1        keep the temp dir (logs, cluster, pgbench output)
set -euo pipefail

SCRIPT_NAME=pool.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EXT_TARGET_DIR="${EXT_TARGET_DIR:-/var/tmp/ogel-examples-target}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-32}"
JOBS="${JOBS:-2}"
POOL_SIZE="${POOL_SIZE:-8}"
SCALE="${SCALE:-10}"
WARMUP="${WARMUP:-3}"
IDLE_CLIENTS="${IDLE_CLIENTS:-10000}"
IDLE_CONCURRENCY="${IDLE_CONCURRENCY:-64}"
SKIP_GATEWAY="${SKIP_GATEWAY:-}"
[[ "$SKIP_GATEWAY" == 0 ]] && SKIP_GATEWAY=""
# How long opening the idle connections may take.
IDLE_READY_TIMEOUT=600

for var in DURATION CLIENTS JOBS POOL_SIZE SCALE WARMUP IDLE_CLIENTS IDLE_CONCURRENCY; do
    [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number (got '${!var}')"
done
((DURATION > 0 && CLIENTS > 0 && JOBS > 0 && POOL_SIZE > 0 && SCALE > 0)) \
    || die "DURATION, CLIENTS, JOBS, POOL_SIZE and SCALE must be at least 1"

require_tools curl awk

# ---------------------------------------------------------------- Postgres
use_pg_bin pg_ctl initdb postgres psql
[[ -x "$PG_BIN/pgbench" ]] \
    || die "$PG_BIN/pgbench not found: it comes with the server package (apt-get install postgresql-contrib, or postgresql-NN), or set PG_BIN"
PGBENCH="$PG_BIN/pgbench"
PSQL="$PG_BIN/psql"
say "Postgres binaries: $PG_BIN ($("$PG_BIN/postgres" --version))"

use_ref_user

# --------------------------------------------------------------- PgBouncer
find_pgbouncer() {
    if [[ -n "${PGBOUNCER:-}" ]]; then
        printf '%s\n' "$PGBOUNCER"
    elif command -v pgbouncer >/dev/null; then
        command -v pgbouncer
    elif [[ -x /usr/sbin/pgbouncer ]]; then
        printf '%s\n' /usr/sbin/pgbouncer
    fi
}
PGBOUNCER="$(find_pgbouncer)"
if [[ -z "$PGBOUNCER" ]]; then
    [[ "$(id -u)" -eq 0 ]] || die "pgbouncer is not installed (as root: apt-get install pgbouncer; or set PGBOUNCER)"
    command -v apt-get >/dev/null || die "pgbouncer is not installed and there is no apt-get: install it, or set PGBOUNCER"
    say "pgbouncer is not installed: apt-get install -y pgbouncer (Debian's; its own service is not used)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >&2 \
        || die "apt-get install pgbouncer failed (try apt-get update first)"
    # The package may start its service (/etc/pgbouncer, port 6432); ours is a
    # separate instance with its own ini and port, so stop that one.
    if command -v systemctl >/dev/null && systemctl is-active --quiet pgbouncer 2>/dev/null; then
        systemctl stop pgbouncer || true
    elif command -v service >/dev/null; then
        service pgbouncer stop >/dev/null 2>&1 || true
    fi
    PGBOUNCER="$(find_pgbouncer)"
    [[ -n "$PGBOUNCER" ]] || die "pgbouncer was installed but is not found (set PGBOUNCER)"
fi
[[ -x "$PGBOUNCER" ]] || die "$PGBOUNCER is not executable (set PGBOUNCER)"
PGB_VERSION="$("$PGBOUNCER" --version 2>/dev/null | awk 'NR == 1 {print $2}')"
[[ -n "$PGB_VERSION" ]] || die "cannot read the version of $PGBOUNCER"
version_at_least() { # version_at_least HAVE WANT
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}
PGB_PREPARED=1
version_at_least "$PGB_VERSION" 1.21 || PGB_PREPARED=""
say "PgBouncer: $PGBOUNCER ($PGB_VERSION$([[ -n "$PGB_PREPARED" ]] || echo '; < 1.21: no prepared statements in transaction mode, -M prepared is n/a'))"

# ------------------------------------------------------------ open files
# 10,000 idle clients are 10,000 descriptors in idle-clients and as many in
# the pooler: raise the limit for everything started from here.
if ! ulimit -n 65536 2>/dev/null; then
    HARD_NOFILE="$(ulimit -Hn)"
    [[ "$HARD_NOFILE" == unlimited ]] && HARD_NOFILE=1048576
    ulimit -n "$HARD_NOFILE" 2>/dev/null || true
fi
NOFILE="$(ulimit -n)"
say "Open-files limit: $NOFILE"
if [[ "$NOFILE" != unlimited ]] && ((IDLE_CLIENTS + 200 > NOFILE)); then
    warn "the open-files limit ($NOFILE) is below IDLE_CLIENTS ($IDLE_CLIENTS) + 200: connections will fail (raise the hard limit, or lower IDLE_CLIENTS)"
fi

# ------------------------------------------------------------------ build
if [[ -n "$SKIP_GATEWAY" ]]; then
    build_release -p ogel-bench
else
    build_release "${GATEWAY_BUILD[@]}" \
        || die "building the gateway failed (SKIP_GATEWAY=1 benchmarks direct vs PgBouncer only)"
fi
IDLE="$CARGO_TARGET_DIR/release/idle-clients"
[[ -x "$IDLE" ]] || die "build did not produce $IDLE"
if [[ -z "$SKIP_GATEWAY" ]]; then
    say "Building the external backend plugin (its own cargo workspace; target $EXT_TARGET_DIR)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$EXT_TARGET_DIR" cargo build --release \
        --manifest-path plugins/examples/external/Cargo.toml) \
        || die "building the external plugin failed (SKIP_GATEWAY=1 benchmarks direct vs PgBouncer only)"
    OGEL="$CARGO_TARGET_DIR/release/ogel"
    EXT_SO="$EXT_TARGET_DIR/release/libogel_backend_external.so"
    [[ -x "$OGEL" ]] || die "build did not produce $OGEL"
    [[ -f "$EXT_SO" ]] || die "build did not produce $EXT_SO"
fi

# ---------------------------------------------------------------- cleanup
make_tmp ogel-pool
PGB_DIR="$TMP/pgbouncer"
LOGS="$TMP/pgbench"
mkdir -p "$LOGS"
PGB_PID=""
BENCH_PID=""
IDLE_PID=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    exec 9>&-
    stop_pid "$IDLE_PID" idle-clients TERM 30
    stop_pid "$BENCH_PID" pgbench TERM 10
    if [[ -n "$PGB_PID" ]] && kill -0 "$PGB_PID" 2>/dev/null; then
        say "Stopping pgbouncer (pid $PGB_PID)"
        stop_pid "$PGB_PID" pgbouncer TERM 30
    fi
    stop_gateway
    stop_left_computes
    stop_reference_pg fast immediate
    show_gateway_log "$rc"
    if ((rc != 0)) && [[ -s "$PGB_DIR/pgbouncer.log" ]]; then
        echo "$SCRIPT_NAME: last lines of the pgbouncer log:" >&2
        tail -n 10 "$PGB_DIR/pgbouncer.log" >&2
    fi
    remove_tmp "pgbench output in $LOGS"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' && return
    fi
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return
        fi
    done
    die "found no free loopback port"
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

with_param() { # with_param URL KEY=VALUE
    if [[ "$1" == *\?* ]]; then printf '%s&%s\n' "$1" "$2"; else printf '%s?%s\n' "$1" "$2"; fi
}

# Resident set size of PID in kB (VmRSS), empty if it is gone.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
kb_to_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ------------------------------------------------------- reference server
PG_PORT="$(free_port)"
ADMIN_PW="$(random_hex 16)"
say "Reference cluster: initdb --auth=scram-sha-256 (superuser admin) in $REF_PGDATA as $REF_USER, port $PG_PORT"
mkdir -p "$REF_DIR/sock"
printf '%s\n' "$ADMIN_PW" >"$REF_DIR/pwfile"
chmod 600 "$REF_DIR/pwfile"
chown -R "$REF_USER" "$REF_DIR"
as_ref "$PG_BIN/initdb" -D "$REF_PGDATA" -U admin --pwfile="$REF_DIR/pwfile" \
    --auth=scram-sha-256 --no-locale --encoding=UTF8 >"$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log" >&2; die "initdb of the reference cluster failed"; }
rm -f "$REF_DIR/pwfile"
cat >>"$REF_PGDATA/postgresql.conf" <<EOF

# bench/pool.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
max_connections = 200
unix_socket_directories = '$REF_DIR/sock'
password_encryption = 'scram-sha-256'
shared_buffers = 256MB
EOF
as_ref "$PG_BIN/pg_ctl" -D "$REF_PGDATA" -l "$REF_DIR/postgres.log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$REF_DIR/postgres.log" >&2; die "the reference postgres did not start"; }

ADMIN_URL="postgresql://admin:$ADMIN_PW@127.0.0.1:$PG_PORT"
admin_sql() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 "$ADMIN_URL/postgres?sslmode=disable" -c "$1"; }
admin_sql 'SELECT 1' >/dev/null || die "cannot log in to the reference server as admin"

# Server connections to "bench" that belong to TARGET, for the pooling
# check: direct connections carry their own application_name, PgBouncer's
# are the other ones of admin, the gateway's log in as the database owner.
DIRECT_APP="ogel_pool_direct"
bench_backends() { # bench_backends TARGET
    local who
    case "$1" in
        direct) who="usename = 'admin' AND application_name = '$DIRECT_APP'" ;;
        pgbouncer) who="usename = 'admin' AND application_name IS DISTINCT FROM '$DIRECT_APP'" ;;
        *) who="usename <> 'admin'" ;;
    esac
    admin_sql "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND backend_type = 'client backend' AND $who" 2>/dev/null || true
}

# ---------------------------------------------------------------- gateway
GW_URL=""
TOKEN_URL=""
if [[ -z "$SKIP_GATEWAY" ]]; then
    mkdir -p "$GW_DIR/plugins"
    cp "$EXT_SO" "$GW_DIR/plugins/"
    GW_MAX_CLIENTS=$((IDLE_CLIENTS + 1000 > 20000 ? IDLE_CLIENTS + 1000 : 20000))
    cat >"$TMP/ogel.toml" <<EOF
default_database = ""
suspend_after = "0s"
plugins_dir = "$GW_DIR/plugins"

[pool]
mode = "transaction"
size = $POOL_SIZE
max_clients = $GW_MAX_CLIENTS
queue_timeout = "120s"

# One address opens every benchmark connection: no per-source rate limit.
[limits]
connections_per_second_per_source = 1000000

[backends.external]
url = "$ADMIN_URL/postgres"
secret = "$(random_hex 32)"
EOF
    chmod 600 "$TMP/ogel.toml"
    say "Starting the gateway: ogel up --data-dir $GW_DIR (pool: transaction, size $POOL_SIZE; log $GW_LOG)"
    start_gateway "$TMP/ogel.toml" ogel=info,ogel_policies=info "SKIP_GATEWAY=1 leaves it out"

    say "Creating database \"bench\" on the external backend through the API"
    CREATED="$(create_database '{"name": "bench", "backend": "external"}')" \
        || die "creating the database through the gateway failed: $CREATED"
    GW_URL="$(json_get .url <<<"$CREATED")" || die "the API's answer has no url: $CREATED"
    GW_URL="$(with_param "$GW_URL" sslmode=disable)"
    echo "    url: $(mask_url "$GW_URL")" >&2
    # A token URL (the token is the user name: no SCRAM exchange).
    MINTED="$(curl -sS --fail-with-body -X POST "$API/v1/databases/bench/tokens" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"ttl": "2h"}')" \
        || die "minting a token URL failed: $MINTED"
    TOKEN_URL="$(json_get .url <<<"$MINTED")" || die "the API's answer has no url: $MINTED"
    TOKEN_URL="${TOKEN_URL%%\?*}?sslmode=disable"
else
    say "SKIP_GATEWAY=1: creating database \"bench\" directly"
    admin_sql 'CREATE DATABASE bench' >/dev/null
fi
DIRECT_URL="$ADMIN_URL/bench?sslmode=disable&application_name=$DIRECT_APP"

# --------------------------------------------------------------- pgbouncer
PGB_PORT="$(free_port)"
[[ "$PGB_PORT" != "$PG_PORT" ]] || PGB_PORT="$(free_port)"
mkdir -p "$PGB_DIR"
ADMIN_SECRET="$(admin_sql "SELECT rolpassword FROM pg_authid WHERE rolname = 'admin'")"
[[ "$ADMIN_SECRET" == SCRAM-SHA-256\$* ]] || die "admin's password on the reference server is not a SCRAM secret"
printf '"admin" "%s"\n' "$ADMIN_SECRET" >"$PGB_DIR/userlist.txt"
PGB_PREPARED_LINE=""
[[ -n "$PGB_PREPARED" ]] && PGB_PREPARED_LINE="max_prepared_statements = 200"
cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $((IDLE_CLIENTS + 1000))
ignore_startup_parameters = extra_float_digits,options
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
log_connections = 0
log_disconnections = 0
$PGB_PREPARED_LINE
EOF
chmod 600 "$PGB_DIR/userlist.txt" "$PGB_DIR/pgbouncer.ini"
chown -R "$REF_USER" "$PGB_DIR"
say "Starting pgbouncer on 127.0.0.1:$PGB_PORT (transaction mode, pool size $POOL_SIZE, as $REF_USER)"
if [[ "$(id -u)" -eq 0 ]]; then
    "$PGBOUNCER" -u "$REF_USER" "$PGB_DIR/pgbouncer.ini" >"$PGB_DIR/stdout.log" 2>&1 </dev/null &
else
    "$PGBOUNCER" "$PGB_DIR/pgbouncer.ini" >"$PGB_DIR/stdout.log" 2>&1 </dev/null &
fi
PGB_PID=$!
PGB_URL="postgresql://admin:$ADMIN_PW@127.0.0.1:$PGB_PORT/bench?sslmode=disable"
for ((i = 0; i < 100; i++)); do
    kill -0 "$PGB_PID" 2>/dev/null \
        || { cat "$PGB_DIR/stdout.log" "$PGB_DIR/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer exited during start-up"; }
    (exec 3<>"/dev/tcp/127.0.0.1/$PGB_PORT") 2>/dev/null && break
    sleep 0.1
done
"$PSQL" -X -q -At "$PGB_URL" -c 'SELECT 1' >/dev/null \
    || die "cannot log in through pgbouncer as admin (SCRAM pass-through; see $PGB_DIR/pgbouncer.log)"

# ---------------------------------------------------------- pgbench data
if [[ -n "$GW_URL" ]]; then
    say "pgbench -i -s $SCALE through the gateway (tables owned by the database's owner)"
    if ! "$PGBENCH" -i -q -s "$SCALE" "$GW_URL" >"$LOGS/init.log" 2>&1; then
        tail -n 5 "$LOGS/init.log" | sed 's/^/    /' >&2
        # Keep going, so that the direct and PgBouncer figures still come
        # out: initialise as admin and let the owner read the tables.
        GW_OWNER="$(sed -E 's#^postgres(ql)?://([^:@/]+).*#\2#' <<<"$GW_URL")"
        warn "pgbench -i through the gateway FAILED (is the gateway's pooler ready? SKIP_GATEWAY=1 leaves it out); initialising directly as admin and granting SELECT to \"$GW_OWNER\""
        "$PGBENCH" -i -q -s "$SCALE" "$DIRECT_URL" >"$LOGS/init-direct.log" 2>&1 \
            || { tail -n 5 "$LOGS/init-direct.log" >&2; die "pgbench -i failed directly too"; }
        "$PSQL" -X -q -At -v ON_ERROR_STOP=1 "$DIRECT_URL" \
            -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"$GW_OWNER\"" >/dev/null \
            || die "granting SELECT on the pgbench tables to \"$GW_OWNER\" failed"
    fi
else
    say "pgbench -i -s $SCALE directly"
    "$PGBENCH" -i -q -s "$SCALE" "$DIRECT_URL" >"$LOGS/init.log" 2>&1 \
        || { tail -n 5 "$LOGS/init.log" >&2; die "pgbench -i failed"; }
fi

if ((WARMUP > 0)); then
    say "Warm-up: ${WARMUP}s of direct pgbench -S (not measured)"
    "$PGBENCH" -S -n -c "$CLIENTS" -j "$JOBS" -T "$WARMUP" "$DIRECT_URL" >"$LOGS/warmup.log" 2>&1 \
        || { tail -n 5 "$LOGS/warmup.log" >&2; die "the warm-up run failed"; }
fi

# -------------------------------------------------------------- workloads
TARGETS=(direct pgbouncer)
[[ -z "$SKIP_GATEWAY" ]] && TARGETS+=(gateway)
declare -A URL_OF=([direct]="$DIRECT_URL" [pgbouncer]="$PGB_URL" [gateway]="$GW_URL")
declare -A TPS LAT SRV
# WORKLOADS: a subset, space-separated ("none": only the idle clients).
read -r -a WORKLOADS <<<"${WORKLOADS:-simple wide connect token extended prepared}"
[[ "${WORKLOADS[*]}" == none ]] && WORKLOADS=()
declare -A LABEL=([simple]="select (-S)" [wide]="select, $((CLIENTS * 2)) clients (-S)" [connect]="select, new conn (-S -C)" [token]="new conn, token URL (-S -C)" [extended]="select, extended (-M extended)" [prepared]="select, prepared (-M prepared)")
declare -A FLAGS=([simple]="-S" [wide]="-S" [connect]="-S -C" [token]="-S -C" [extended]="-S -M extended" [prepared]="-S -M prepared")
# Clients per workload (default CLIENTS).
declare -A CLIENTS_OF=([wide]=$((CLIENTS * 2)))

# run_pgbench WORKLOAD TARGET: fills TPS, LAT and SRV[WORKLOAD:TARGET].
run_pgbench() {
    local workload="$1" target="$2" key="$1:$2" log="$LOGS/$1-$2.log" peak=0 n rc=0
    local url="${URL_OF[$target]}"
    if [[ "$workload" == token ]]; then
        if [[ "$target" != gateway ]]; then
            TPS[$key]="n/a" LAT[$key]="n/a" SRV[$key]="n/a"
            echo "    $target: n/a (token URLs are the gateway's)" >&2
            return
        fi
        url="$TOKEN_URL"
    fi
    if [[ "$workload" == prepared && "$target" == pgbouncer && -z "$PGB_PREPARED" ]]; then
        TPS[$key]="n/a" LAT[$key]="n/a" SRV[$key]="n/a"
        echo "    $target: n/a (PgBouncer $PGB_VERSION < 1.21 has no prepared statements in transaction mode)" >&2
        return
    fi
    # shellcheck disable=SC2086 # FLAGS are words
    "$PGBENCH" ${FLAGS[$workload]} -n -c "${CLIENTS_OF[$workload]:-$CLIENTS}" -j "$JOBS" -T "$DURATION" "$url" >"$log" 2>&1 &
    BENCH_PID=$!
    while kill -0 "$BENCH_PID" 2>/dev/null; do
        n="$(bench_backends "$target")"
        [[ "$n" =~ ^[0-9]+$ ]] && ((n > peak)) && peak="$n"
        sleep 1
    done
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    SRV[$key]="$peak"
    local tps lat
    tps="$(awk '/^tps = / {print $3; exit}' "$log")"
    lat="$(awk '/^latency average = / {print $4; exit}' "$log")"
    if ((rc != 0)) || [[ -z "$tps" ]]; then
        TPS[$key]="fail" LAT[$key]="fail"
        echo "    $target: FAILED (exit $rc; $log):" >&2
        grep -m 3 -iE 'error|fatal|abort' "$log" | sed 's/^/        /' >&2 || tail -n 3 "$log" | sed 's/^/        /' >&2
        return
    fi
    TPS[$key]="$tps" LAT[$key]="${lat:-?}"
    printf '    %-9s tps %10.0f   latency %s ms   server connections (peak) %s\n' "$target" "$tps" "${lat:-?}" "$peak" >&2
    if [[ "$target" != direct ]] && ((peak > POOL_SIZE)); then
        warn "$target used $peak server connections, more than the pool size $POOL_SIZE: is it pooling?"
    fi
}

for workload in "${WORKLOADS[@]}"; do
    say "pgbench ${FLAGS[$workload]} -n -c ${CLIENTS_OF[$workload]:-$CLIENTS} -j $JOBS -T $DURATION: ${LABEL[$workload]}"
    for target in "${TARGETS[@]}"; do
        run_pgbench "$workload" "$target"
    done
done

# ----------------------------------------------------------- idle clients
declare -A IDLE_BEFORE IDLE_HOLD IDLE_OK IDLE_FAILED IDLE_SRV IDLE_SECS
# idle_run TARGET PID [URL_TARGET [IDLE-CLIENTS ARGS…]]: holds IDLE_CLIENTS
# connections to URL_TARGET's URL (default TARGET's), reads PID's RSS.
idle_run() {
    local target="$1" pid="$2" url_target="${3:-$1}" log="$LOGS/idle-$1.log" fifo="$TMP/idle-$1.fifo" line="" started
    shift $(($# < 3 ? $# : 3))
    IDLE_BEFORE[$target]="$(rss_kb "$pid")"
    mkfifo "$fifo"
    # Read-write open: never blocks; closing fd 9 later is idle-clients' EOF.
    exec 9<>"$fifo"
    started=$SECONDS
    "$IDLE" --url "${URL_OF[$url_target]}" --count "$IDLE_CLIENTS" --concurrency "$IDLE_CONCURRENCY" "$@" \
        <"$fifo" 9>&- >"$log" 2>&1 &
    IDLE_PID=$!
    while :; do
        line="$(grep -m 1 '^ready ' "$log" 2>/dev/null || true)"
        [[ -n "$line" ]] && break
        kill -0 "$IDLE_PID" 2>/dev/null || break
        ((SECONDS - started < IDLE_READY_TIMEOUT)) || break
        sleep 0.5
    done
    IDLE_SECS[$target]=$((SECONDS - started))
    if [[ -n "$line" ]]; then
        read -r _ IDLE_OK[$target] _ IDLE_FAILED[$target] <<<"$line"
        sleep 2 # let the pooler settle
        IDLE_HOLD[$target]="$(rss_kb "$pid")"
        IDLE_SRV[$target]="$(bench_backends "$target")"
        local parked=""
        if [[ "$target" == gateway* ]]; then
            # Clients parked without a task (pool.park_idle_after), from /metrics.
            parked="; parked $(curl -sS -H "Authorization: Bearer $TOKEN" "$API/metrics" 2>/dev/null |
                awk '/^ogel_clients\{.*state="parked"\}/ {n += $2} END {print n + 0}')"
        fi
        printf '    %-9s %s connected, %s failed in %ss; RSS %s MB -> %s MB; server connections %s%s\n' \
            "$target" "${IDLE_OK[$target]}" "${IDLE_FAILED[$target]}" "${IDLE_SECS[$target]}" \
            "$(kb_to_mb "${IDLE_BEFORE[$target]:-0}")" "$(kb_to_mb "${IDLE_HOLD[$target]:-0}")" \
            "${IDLE_SRV[$target]}" "$parked" >&2
        grep -m 1 'first error' "$log" | sed 's/^/        /' >&2 || true
        if [[ "${IDLE_SRV[$target]}" =~ ^[0-9]+$ ]] && ((IDLE_SRV[$target] > POOL_SIZE)); then
            warn "$target holds ${IDLE_SRV[$target]} server connections for idle clients, more than the pool size $POOL_SIZE: is it pooling?"
        fi
    else
        IDLE_OK[$target]="fail"
        echo "    $target: idle-clients did not report ready (see $log):" >&2
        tail -n 3 "$log" | sed 's/^/        /' >&2
    fi
    exec 9>&- # end of input: idle-clients closes its connections and exits
    local waited=0
    while kill -0 "$IDLE_PID" 2>/dev/null && ((waited < 300)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    stop_pid "$IDLE_PID" idle-clients TERM 30
    IDLE_PID=""
    rm -f "$fifo"
}

if ((IDLE_CLIENTS > 0)); then
    say "Idle clients: $IDLE_CLIENTS authenticated connections held open (direct: n/a, max_connections = 200)"
    kill -0 "$PGB_PID" 2>/dev/null || die "pgbouncer is gone"
    idle_run pgbouncer "$PGB_PID"
    if [[ -z "$SKIP_GATEWAY" ]]; then
        kill -0 "$GW_PID" 2>/dev/null || die "the gateway is gone"
        idle_run gateway "$GW_PID"
        # The same over TLS (the gateway's own CA), for the TLS figure. Its
        # "before" is after the plain run, whose freed memory the allocator
        # may reuse: read it as a lower bound.
        idle_run gateway-tls "$GW_PID" gateway --ca "$GW_DIR/tls/ca.pem"
    fi
fi

# ------------------------------------------------------------------ table
# ratio A B: A / B to two places, or n/a.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b
        else printf "n/a" }'
}
tps_cell() { awk -v t="$1" 'BEGIN { if (t ~ /^[0-9.]+$/) printf "%.0f", t; else printf "%s", t }'; }
lat_cell() { awk -v l="${1:--}" 'BEGIN { if (l ~ /^[0-9.]+$/) printf "%.2f", l; else printf "%s", l }'; }

HOST_CPUS="$(nproc 2>/dev/null || echo '?')"
say "Results"
{
    echo
    echo "pgbench -c $CLIENTS -j $JOBS -T $DURATION -n, scale $SCALE; pool size $POOL_SIZE (PgBouncer $PGB_VERSION and gateway, transaction mode); $HOST_CPUS CPUs"
    printf '%-32s %11s %14s %12s %10s %13s   %-22s %s\n' \
        workload "direct tps" "pgbouncer tps" "gateway tps" gw/direct gw/pgbouncer \
        "latency ms d/p/g" "server conns d/p/g"
    for workload in "${WORKLOADS[@]}"; do
        d="${TPS[$workload:direct]:-}" p="${TPS[$workload:pgbouncer]:-}" g="${TPS[$workload:gateway]:-skipped}"
        [[ -n "$SKIP_GATEWAY" ]] && g="skipped"
        printf '%-32s %11s %14s %12s %10s %13s   %-22s %s\n' \
            "${LABEL[$workload]}" "$(tps_cell "$d")" "$(tps_cell "$p")" "$(tps_cell "$g")" \
            "$(ratio "$g" "$d")" "$(ratio "$g" "$p")" \
            "$(lat_cell "${LAT[$workload:direct]:-}")/$(lat_cell "${LAT[$workload:pgbouncer]:-}")/$(lat_cell "${LAT[$workload:gateway]:-}")" \
            "${SRV[$workload:direct]:--}/${SRV[$workload:pgbouncer]:--}/${SRV[$workload:gateway]:--}"
    done
    if ((IDLE_CLIENTS > 0)); then
        echo
        echo "idle clients ($IDLE_CLIENTS held open; RSS is VmRSS of the pooler process)"
        printf '  %-10s %s\n' direct "n/a (max_connections = 200)"
        for target in pgbouncer gateway gateway-tls; do
            if [[ "$target" == gateway* && -n "$SKIP_GATEWAY" ]]; then
                printf '  %-10s %s\n' gateway skipped
                continue
            fi
            if [[ "${IDLE_OK[$target]:-fail}" == fail ]]; then
                printf '  %-10s %s\n' "$target" "failed (see $LOGS/idle-$target.log)"
                continue
            fi
            before="${IDLE_BEFORE[$target]:-0}" hold="${IDLE_HOLD[$target]:-0}" ok="${IDLE_OK[$target]}"
            per="$(awk -v b="$before" -v h="$hold" -v n="$ok" 'BEGIN { if (n > 0) printf "%.1f", (h - b) / n; else printf "n/a" }')"
            printf '  %-10s RSS %8s MB before, %8s MB holding (%s KB/client); %s connected, %s failed in %ss; server conns %s\n' \
                "$target" "$(kb_to_mb "$before")" "$(kb_to_mb "$hold")" "$per" "$ok" \
                "${IDLE_FAILED[$target]}" "${IDLE_SECS[$target]}" "${IDLE_SRV[$target]:-?}"
        done
    fi
    echo
    echo "raw pgbench output: $LOGS$([[ "${KEEP_TMP:-}" == 1 ]] || echo ' (removed at exit; KEEP_TMP=1 keeps it)')"
}

# A failed run leaves a non-zero exit status (after the table).
failed=0
for key in "${!TPS[@]}"; do
    [[ "${TPS[$key]}" == fail ]] && failed=1
done
for target in "${!IDLE_OK[@]}"; do
    [[ "${IDLE_OK[$target]}" == fail || "${IDLE_FAILED[$target]:-0}" != 0 ]] && failed=1
done
exit "$failed"
