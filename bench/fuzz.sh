#!/usr/bin/env bash
# bench/fuzz.sh — a million hostile inputs against a real gateway: counts of
# inputs, crashes and hangs (the goal: 0 and 0).
#
# Builds release binaries, starts `ogel up` on free loopback ports in a
# temporary data dir (pool size POOL_SIZE, OGEL_AUTH_TIMEOUT=2s,
# OGEL_LOG=ogel=warn) and runs `fuzz-gateway` (bench/fuzz/) against its
# default database "app": pre-auth inputs, each on its own connection, and
# post-auth inputs, many per logged-in connection, with a bystander
# `SELECT 1` and a check of the gateway process every 10,000 inputs. See
# bench/fuzz/main.rs for what is sent and what counts as a crash or a hang.
# Afterwards: the gateway log must hold no panic, and the gateway must still
# run and serve `SELECT 1`. The gateway and the temp dir are always cleaned
# up (also on Ctrl-C).
#
# The last line is fuzz-gateway's:
#   inputs N pre-auth P post-auth Q crashes C hangs H closed-by-gateway K elapsed S
# with the panics found in the gateway log added to the crashes. The exit
# status is non-zero on any crash or hang, or if the final checks fail.
# fuzz-gateway stops early after 100 hangs, or when no input completes for
# 60 s (a wedged gateway); its findings (HANG, SUSPECT, CROSSED-ANSWER:
# one client's answer reaching another) show the input's bytes and its id
# for a replay.
#
# Environment:
#   INPUTS                inputs to send (default 1000000)
#   CONCURRENCY           post-auth connections at a time (default 32)
#   PRE_AUTH_CONCURRENCY  pre-auth connections at a time (default 256)
#   SEED                  seed of every input (default 1)
#   POOL_SIZE             server connections of the pool (default 4)
#   PG_BIN                Postgres bin dir (default: `pg_config --bindir`, else
#                         the newest /usr/lib/postgresql/*/bin)
#   CARGO_TARGET_DIR      default /var/tmp/ogel-target
#   KEEP_TMP=1            keep the temp dir (gateway log, fuzz-gateway output)
# Extra arguments are passed to fuzz-gateway (e.g. --post-auth-share 0.8, or
# --skip-known-hangs to defuse the triggers of the hangs it has found, so
# that a run goes on to find others; see fuzz-gateway --help).
# To replay inputs it reports, against a running gateway:
#   fuzz-gateway --addr HOST:PORT --url URL --seed S --only post:17,post:49
# (--dump prints their bytes).
set -euo pipefail

SCRIPT_NAME=fuzz.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INPUTS="${INPUTS:-1000000}"
CONCURRENCY="${CONCURRENCY:-32}"
PRE_AUTH_CONCURRENCY="${PRE_AUTH_CONCURRENCY:-256}"
SEED="${SEED:-1}"
POOL_SIZE="${POOL_SIZE:-4}"
AUTH_TIMEOUT=2s

for var in INPUTS CONCURRENCY PRE_AUTH_CONCURRENCY SEED POOL_SIZE; do
    [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number (got '${!var}')"
done
((INPUTS > 0 && CONCURRENCY > 0 && PRE_AUTH_CONCURRENCY > 0 && POOL_SIZE > 0)) \
    || die "INPUTS, CONCURRENCY, PRE_AUTH_CONCURRENCY and POOL_SIZE must be at least 1"

require_tools awk timeout

# ---------------------------------------------------------------- Postgres
use_pg_bin pg_ctl initdb postgres psql
say "Postgres binaries: $PG_BIN ($("$PG_BIN/postgres" --version))"
use_ref_user

# ------------------------------------------------------------------ build
build_release "${GATEWAY_BUILD[@]}"
OGEL="$CARGO_TARGET_DIR/release/ogel"
FUZZ="$CARGO_TARGET_DIR/release/fuzz-gateway"
[[ -x "$OGEL" && -x "$FUZZ" ]] || die "build did not produce $OGEL and $FUZZ"

# Each pre-auth connection holds a descriptor here and one in the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > PRE_AUTH_CONCURRENCY + CONCURRENCY + 256)) \
    || warn "open file limit $(ulimit -n) is low for $PRE_AUTH_CONCURRENCY + $CONCURRENCY connections"

# ---------------------------------------------------------------- cleanup
make_tmp ogel-fuzz
FUZZ_PID=""
FUZZ_LOG="$TMP/fuzz-gateway.log"

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$FUZZ_PID" fuzz-gateway TERM 10
    stop_gateway "it stops its computes"
    stop_left_computes
    show_gateway_log "$rc"
    remove_tmp
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- gateway
say "Starting the gateway: ogel up --data-dir $GW_DIR (pool size $POOL_SIZE, auth_timeout $AUTH_TIMEOUT; log $GW_LOG)"
export OGEL_POOL__SIZE="$POOL_SIZE" OGEL_AUTH_TIMEOUT="$AUTH_TIMEOUT"
# A config path that does not exist keeps a stray ./ogel.toml out.
start_gateway "$TMP/no-config.toml" ogel=warn
[[ -s "$GW_DIR/default-database.password" ]] \
    || die "the gateway made no default database (no $GW_DIR/default-database.password)"
URL="postgresql://app_owner:$(cat "$GW_DIR/default-database.password")@$LISTEN/app"
echo "    url: $(mask_url "$URL")" >&2

# -------------------------------------------------------------------- fuzz
say "Running fuzz-gateway: $INPUTS inputs, seed $SEED, concurrency $CONCURRENCY post-auth + $PRE_AUTH_CONCURRENCY pre-auth (output also in $FUZZ_LOG)"
# In the background so that a signal to this script is handled at once.
set +e
OGEL_TOKEN="$TOKEN" "$FUZZ" \
    --addr "$LISTEN" \
    --url "$URL" \
    --inputs "$INPUTS" \
    --concurrency "$CONCURRENCY" \
    --pre-auth-concurrency "$PRE_AUTH_CONCURRENCY" \
    --seed "$SEED" \
    --auth-timeout "$AUTH_TIMEOUT" \
    --pid "$GW_PID" \
    "$@" >"$FUZZ_LOG.out" 2> >(tee "$FUZZ_LOG" >&2) &
FUZZ_PID=$!
wait "$FUZZ_PID"
FUZZ_RC=$?
FUZZ_PID=""
set -e
# tee may still be writing.
sleep 0.2

SUMMARY="$(grep -E '^inputs [0-9]+ ' "$FUZZ_LOG.out" | tail -n 1 || true)"
[[ -n "$SUMMARY" ]] || die "fuzz-gateway ended (exit $FUZZ_RC) without its summary line"

# ----------------------------------------------------------- final checks
say "Checking the gateway after the run"
FAILED=0
PANICS="$(grep -c 'panicked' "$GW_LOG" || true)"
if ((PANICS > 0)); then
    warn "the gateway log holds $PANICS panic(s):"
    grep -n -A 3 'panicked' "$GW_LOG" | head -n 40 >&2
    FAILED=1
fi
GW_STATE="$(awk '{print $3}' "/proc/$GW_PID/stat" 2>/dev/null || echo gone)"
if [[ "$GW_STATE" == gone || "$GW_STATE" == Z ]]; then
    warn "the gateway process (pid $GW_PID) is gone"
    ALIVE=no
    FAILED=1
else
    ALIVE=yes
fi
if ONE="$(PGCONNECT_TIMEOUT=10 timeout 20 "$PG_BIN/psql" "$URL" -XAtqc 'SELECT 1' 2>&1)" && [[ "$ONE" == 1 ]]; then
    SERVES=yes
else
    warn "SELECT 1 through the gateway failed after the run: $ONE"
    SERVES=no
    FAILED=1
fi

# The crash count includes panics of client tasks, which the gateway
# survives (tokio catches them) but which are crashes all the same.
read -r _ N _ PRE _ POST _ CRASHES _ HANGS _ CLOSED _ ELAPSED <<<"$SUMMARY"
CRASHES=$((CRASHES + PANICS))
RATE="$(awk -v n="$N" -v s="$ELAPSED" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }')"

# Answers of one client that reached another (fuzz-gateway's detail line).
CROSSED="$(grep -o 'answers that reached the wrong client [0-9]*' "$FUZZ_LOG" | grep -o '[0-9]*$' | tail -n 1 || true)"

say "Summary"
echo "gateway: alive $ALIVE, serves SELECT 1 $SERVES, panics in its log $PANICS, answers that reached the wrong client ${CROSSED:-?}; fuzz-gateway exit $FUZZ_RC; rate $RATE inputs/s" >&2
echo "inputs $N pre-auth $PRE post-auth $POST crashes $CRASHES hangs $HANGS closed-by-gateway $CLOSED elapsed $ELAPSED"
((CRASHES + HANGS == 0 && FAILED == 0 && FUZZ_RC == 0))
