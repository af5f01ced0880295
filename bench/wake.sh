#!/usr/bin/env bash
# bench/wake.sh — wake latency of a suspended database through the gateway,
# next to `pg_ctl -w start` + first query of a plain cluster.
#
# Builds release binaries, starts `ogel up` on free loopback ports in a
# temporary data dir, creates database "bench" (suspend_after_secs 0) through
# the API, initdb's a reference cluster (trust auth, data checksums) and runs
# `wake-bench`. The gateway, any reference postgres and the temp dir are
# always cleaned up.
#
# Environment:
#   PG_BIN            Postgres bin dir (default: `pg_config --bindir`, else the
#                     newest /usr/lib/postgresql/*/bin); the gateway uses it too
#   ITERATIONS        measured iterations per side (default 30)
#   WARMUP            unmeasured iterations per side first (default 1)
#   CARGO_TARGET_DIR  default /var/tmp/ogel-target
#   KEEP_TMP=1        keep the temp dir (logs, clusters) for inspection
# Extra arguments are passed to wake-bench (e.g. --skip-reference).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ogel-target}"
ITERATIONS="${ITERATIONS:-30}"
WARMUP="${WARMUP:-1}"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'wake.sh: error: %s\n' "$*" >&2; exit 1; }

for tool in curl; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"
done
command -v jq >/dev/null || command -v python3 >/dev/null || die "jq or python3 is required to read JSON (apt-get install jq)"

# ---------------------------------------------------------------- Postgres
find_pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        printf '%s\n' "$PG_BIN"
        return
    fi
    if command -v pg_config >/dev/null; then
        local dir
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$dir" && -x "$dir/pg_ctl" && -x "$dir/initdb" ]]; then
            printf '%s\n' "$dir"
            return
        fi
    fi
    local newest
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$newest" ]] || die "no Postgres binaries found: set PG_BIN, or apt-get install postgresql"
    printf '%s\n' "$newest"
}
PG_BIN="$(find_pg_bin)"
for bin in pg_ctl initdb postgres; do
    [[ -x "$PG_BIN/$bin" ]] || die "$PG_BIN/$bin not found or not executable (set PG_BIN)"
done
say "Postgres binaries: $PG_BIN ($("$PG_BIN/postgres" --version))"

# Run as the unprivileged user when root (postgres refuses to run as root).
if [[ "$(id -u)" -eq 0 ]]; then
    REF_USER="ogel"
    command -v runuser >/dev/null || die "runuser is required when running as root (apt-get install util-linux)"
    id "$REF_USER" >/dev/null 2>&1 || die "running as root, but OS user '$REF_USER' does not exist (useradd --system $REF_USER)"
    as_ref() { runuser -u "$REF_USER" -- "$@"; }
else
    REF_USER="$(id -un)"
    as_ref() { "$@"; }
fi

# ------------------------------------------------------------------ build
say "Building release binaries (cargo build --release -p ogel -p ogel-backend-native -p ogel-bench; target $CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release -p ogel -p ogel-backend-native -p ogel-bench)
OGEL="$CARGO_TARGET_DIR/release/ogel"
BENCH="$CARGO_TARGET_DIR/release/wake-bench"
[[ -x "$OGEL" && -x "$BENCH" ]] || die "build did not produce $OGEL and $BENCH"

# ---------------------------------------------------------------- cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/ogel-wake.XXXXXX")"
chmod 755 "$TMP" # the compute user must traverse it
GW_DIR="$TMP/gateway"
REF_DIR="$TMP/reference"
REF_PGDATA="$REF_DIR/pgdata"
GW_LOG="$TMP/gateway.log"
GW_PID=""
BENCH_PID=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
    fi
    if [[ -n "$GW_PID" ]] && kill -0 "$GW_PID" 2>/dev/null; then
        say "Stopping the gateway (pid $GW_PID, SIGTERM; it stops its computes)"
        kill -TERM "$GW_PID" 2>/dev/null
        local waited=0
        while kill -0 "$GW_PID" 2>/dev/null && ((waited < 600)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$GW_PID" 2>/dev/null; then
            echo "wake.sh: the gateway did not stop within 60s; killing it" >&2
            kill -KILL "$GW_PID" 2>/dev/null
        fi
        wait "$GW_PID" 2>/dev/null
    fi
    # Computes the gateway may have left behind (e.g. if it was killed).
    local pidfile pid
    for pidfile in "$GW_DIR"/native/databases/*/pgdata/postmaster.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(head -n 1 "$pidfile")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            echo "wake.sh: stopping a compute left running (pid $pid)" >&2
            as_ref "$PG_BIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 \
                || kill -QUIT "$pid" 2>/dev/null
        fi
    done
    if [[ -f "$REF_PGDATA/postmaster.pid" ]]; then
        say "Stopping the reference postgres"
        as_ref "$PG_BIN/pg_ctl" -D "$REF_PGDATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if ((rc != 0)) && [[ -f "$GW_LOG" ]]; then
        echo "wake.sh: failed (exit $rc); last lines of the gateway log:" >&2
        tail -n 20 "$GW_LOG" >&2
    fi
    if [[ "${KEEP_TMP:-}" == 1 ]]; then
        say "Keeping $TMP (KEEP_TMP=1)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- gateway
say "Starting the gateway: ogel up --data-dir $GW_DIR (free loopback ports; log $GW_LOG)"
# A config path that does not exist keeps a stray ./ogel.toml out; the computes
# use the same binaries as the reference.
NO_COLOR=1 OGEL_NATIVE__PG_BIN="$PG_BIN" OGEL_LOG="${OGEL_LOG:-ogel=info,ogel_policies=info,ogel_backend_native=info}" \
    "$OGEL" up --data-dir "$GW_DIR" --listen 127.0.0.1:0 --api 127.0.0.1:0 \
    --config "$TMP/no-config.toml" >"$GW_LOG" 2>&1 </dev/null &
GW_PID=$!

json_get() { # json_get FILTER  (jq filter of the form .a.b; reads stdin)
    if command -v jq >/dev/null; then
        jq -er "$1"
    else
        python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].strip(".").split("."): v=v[k]
print(v)' "$1"
    fi
}

# gateway.json appears once it is ready (the first start runs initdb); it
# is not written atomically, so read it until it parses.
API="" LISTEN=""
for ((i = 0; i < 1200; i++)); do
    if [[ -s "$GW_DIR/gateway.json" ]] \
        && API="$(json_get .api <"$GW_DIR/gateway.json" 2>/dev/null)" \
        && LISTEN="$(json_get .listen <"$GW_DIR/gateway.json" 2>/dev/null)"; then
        break
    fi
    API="" LISTEN=""
    kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited during start-up (its log follows)"
    sleep 0.1
done
[[ -n "$API" && -n "$LISTEN" ]] || die "the gateway did not write $GW_DIR/gateway.json within 120s"
API="http://$API"
TOKEN="$(cat "$GW_DIR/admin-token")"
say "Gateway up (pid $GW_PID): postgres $LISTEN, api $API"

say "Creating database \"bench\" (suspend_after_secs 0) through the API"
CREATED="$(curl -sS --fail-with-body -X POST "$API/v1/databases" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"name": "bench", "suspend_after_secs": 0}')" || die "creating the database failed: $CREATED"
URL="$(json_get .url <<<"$CREATED")"
echo "    url: $(sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$URL")" >&2

# -------------------------------------------------------------- reference
say "Preparing the reference cluster: initdb --auth=trust --data-checksums in $REF_PGDATA (as $REF_USER)"
mkdir -p "$REF_DIR"
chown "$REF_USER" "$REF_DIR"
# Same locale/encoding choices as the gateway's template cluster.
as_ref "$PG_BIN/initdb" -D "$REF_PGDATA" --auth=trust --data-checksums \
    --no-locale --encoding=UTF8 >"$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log" >&2; die "initdb of the reference cluster failed"; }

# -------------------------------------------------------------- benchmark
say "Running wake-bench ($WARMUP warm-up + $ITERATIONS measured iterations per side)"
# In the background so that a signal to this script is handled at once.
OGEL_TOKEN="$TOKEN" "$BENCH" \
    --api "$API" \
    --url "$URL" \
    --db bench \
    --iterations "$ITERATIONS" \
    --warmup "$WARMUP" \
    --pg-bin "$PG_BIN" \
    --reference-pgdata "$REF_PGDATA" \
    --reference-user "$REF_USER" \
    "$@" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=""
