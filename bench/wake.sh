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

SCRIPT_NAME=wake.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ITERATIONS="${ITERATIONS:-30}"
WARMUP="${WARMUP:-1}"

require_tools curl

# ---------------------------------------------------------------- Postgres
use_pg_bin pg_ctl initdb postgres
say "Postgres binaries: $PG_BIN ($("$PG_BIN/postgres" --version))"

use_ref_user

# ------------------------------------------------------------------ build
build_release "${GATEWAY_BUILD[@]}"
OGEL="$CARGO_TARGET_DIR/release/ogel"
BENCH="$CARGO_TARGET_DIR/release/wake-bench"
[[ -x "$OGEL" && -x "$BENCH" ]] || die "build did not produce $OGEL and $BENCH"

# ---------------------------------------------------------------- cleanup
make_tmp ogel-wake
BENCH_PID=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$BENCH_PID" wake-bench TERM 10
    stop_gateway "it stops its computes"
    stop_left_computes
    stop_reference_pg immediate
    show_gateway_log "$rc"
    remove_tmp
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- gateway
say "Starting the gateway: ogel up --data-dir $GW_DIR (free loopback ports; log $GW_LOG)"
# A config path that does not exist keeps a stray ./ogel.toml out; the computes
# use the same binaries as the reference.
start_gateway "$TMP/no-config.toml" ogel=info,ogel_policies=info,ogel_backend_native=info

say "Creating database \"bench\" (suspend_after_secs 0) through the API"
CREATED="$(create_database '{"name": "bench", "suspend_after_secs": 0}')" || die "creating the database failed: $CREATED"
URL="$(json_get .url <<<"$CREATED")"
echo "    url: $(mask_url "$URL")" >&2

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
