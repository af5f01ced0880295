# bench/lib.sh — what the bench/*.sh scripts share; sourced, never run:
#
#   SCRIPT_NAME=pool.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It owns what pool.sh and wake.sh did alike: ROOT and the CARGO_TARGET_DIR
# default; messages (say, warn, die: prefixed with SCRIPT_NAME); the check
# for required tools; finding the Postgres binaries (PG_BIN); running as the
# unprivileged OS user when root (REF_USER, as_ref); the one cargo build of
# gateway + bench tools the scripts share; reading JSON (json_get); hiding
# a URL's password (mask_url); the temp dir and its layout (make_tmp); starting `ogel up` on
# free loopback ports until it is ready (GW_PID, API, LISTEN, TOKEN) and
# creating a database through its API; and the pieces of cleanup (stop_pid,
# stop_gateway, stop_left_computes, stop_reference_pg, show_gateway_log,
# remove_tmp). Each script keeps its own cleanup() and traps, built from
# these pieces, so what it stops stays visible there.
#
# Globals the functions read: SCRIPT_NAME and OGEL, set by the script;
# TMP, GW_DIR, GW_LOG, REF_PGDATA, set by make_tmp.
# shellcheck shell=bash

: "${SCRIPT_NAME:?set SCRIPT_NAME before sourcing bench/lib.sh}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ogel-target}"

# ---------------------------------------------------------------- messages
say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }

# require_tools TOOL...: each on PATH, and jq or python3 (for json_get).
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"
    done
    command -v jq >/dev/null || command -v python3 >/dev/null || die "jq or python3 is required to read JSON (apt-get install jq)"
}

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
    # shellcheck disable=SC2012 # directory names of installed versions
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$newest" ]] || die "no Postgres binaries found: set PG_BIN, or apt-get install postgresql"
    printf '%s\n' "$newest"
}

# use_pg_bin BIN...: sets PG_BIN (find_pg_bin) and checks that each BIN is
# an executable in it.
use_pg_bin() {
    local bin
    PG_BIN="$(find_pg_bin)"
    for bin in "$@"; do
        [[ -x "$PG_BIN/$bin" ]] || die "$PG_BIN/$bin not found or not executable (set PG_BIN)"
    done
}

# use_ref_user: postgres (and pgbouncer) refuse to run as root, so when root
# everything of theirs runs as the unprivileged OS user "ogel". Sets REF_USER
# and defines as_ref CMD...: runs CMD as REF_USER.
use_ref_user() {
    if [[ "$(id -u)" -eq 0 ]]; then
        REF_USER="ogel"
        command -v runuser >/dev/null || die "runuser is required when running as root (apt-get install util-linux)"
        id "$REF_USER" >/dev/null 2>&1 || die "running as root, but OS user '$REF_USER' does not exist (useradd --system $REF_USER)"
        as_ref() { runuser -u "$REF_USER" -- "$@"; }
    else
        REF_USER="$(id -un)"
        as_ref() { "$@"; }
    fi
}

# ------------------------------------------------------------------ build
# The gateway, its native backend and the bench tools, in ONE cargo
# invocation for every script, so that features unify the same way and the
# scripts share one build.
# shellcheck disable=SC2034 # used by the scripts
GATEWAY_BUILD=(-p ogel -p ogel-backend-native -p ogel-bench)

# build_release CARGO_ARGS...: cargo build --release in ROOT.
build_release() {
    say "Building release binaries (cargo build --release $*; target $CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release "$@")
}

# ---------------------------------------------------------------- helpers
json_get() { # json_get FILTER  (jq filter of the form .a.b; reads stdin)
    if command -v jq >/dev/null; then
        jq -er "$1"
    else
        python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].strip(".").split("."): v=v[k]
print(v)' "$1"
    fi
}

# mask_url URL: the URL with its password shown as ***.
mask_url() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

# --------------------------------------------------------------- temp dir
# make_tmp PREFIX: TMP, a new temp dir ${TMPDIR:-/tmp}/PREFIX.XXXXXX that
# REF_USER can traverse, and the layout in it that the functions here use:
# GW_DIR (gateway data dir), GW_LOG, REF_DIR, REF_PGDATA (reference
# cluster). GW_PID stays empty until start_gateway.
make_tmp() {
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    chmod 755 "$TMP" # the unprivileged user must traverse it
    GW_DIR="$TMP/gateway"
    GW_LOG="$TMP/gateway.log"
    REF_DIR="$TMP/reference"
    REF_PGDATA="$REF_DIR/pgdata"
    GW_PID=""
}

# ---------------------------------------------------------------- gateway
# start_gateway CONFIG OGEL_LOG_DEFAULT [HINT]: `$OGEL up` in the background
# on free loopback ports, data dir GW_DIR, log GW_LOG, computes on PG_BIN's
# binaries (OGEL_LOG from the environment wins over OGEL_LOG_DEFAULT). Sets
# GW_PID at once, so cleanup stops it whatever happens next; waits for
# gateway.json, then sets API (http://HOST:PORT), LISTEN and TOKEN. HINT is
# added to the message if it exits during start-up.
start_gateway() {
    local config="$1" log_default="$2" hint="${3:+; $3}" i
    NO_COLOR=1 OGEL_NATIVE__PG_BIN="$PG_BIN" OGEL_LOG="${OGEL_LOG:-$log_default}" \
        "$OGEL" up --data-dir "$GW_DIR" --listen 127.0.0.1:0 --api 127.0.0.1:0 \
        --config "$config" >"$GW_LOG" 2>&1 </dev/null &
    GW_PID=$!

    # gateway.json appears once it is ready (a first start runs initdb); it
    # is not written atomically, so read it until it parses.
    API="" LISTEN=""
    for ((i = 0; i < 1200; i++)); do
        if [[ -s "$GW_DIR/gateway.json" ]] \
            && API="$(json_get .api <"$GW_DIR/gateway.json" 2>/dev/null)" \
            && LISTEN="$(json_get .listen <"$GW_DIR/gateway.json" 2>/dev/null)"; then
            break
        fi
        API="" LISTEN=""
        kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited during start-up (its log follows$hint)"
        sleep 0.1
    done
    [[ -n "$API" && -n "$LISTEN" ]] || die "the gateway did not write $GW_DIR/gateway.json within 120s"
    API="http://$API"
    TOKEN="$(cat "$GW_DIR/admin-token")"
    say "Gateway up (pid $GW_PID): postgres $LISTEN, api $API"
}

# create_database JSON: POST /v1/databases with the admin token; prints the
# answer (also on an HTTP error, with a non-zero status).
create_database() {
    curl -sS --fail-with-body -X POST "$API/v1/databases" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "$1"
}

# ---------------------------------------------------------------- cleanup
# stop_pid PID NAME SIGNAL SECONDS: signal, wait, then SIGKILL.
stop_pid() {
    local pid="$1" name="$2" sig="$3" secs="$4" waited=0
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && ((waited < secs * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$SCRIPT_NAME: $name (pid $pid) did not stop within ${secs}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}

# stop_gateway [NOTE]: SIGTERM to GW_PID if it runs, SIGKILL after 60s.
# shellcheck disable=SC2120 # NOTE is optional
stop_gateway() {
    if [[ -n "${GW_PID:-}" ]] && kill -0 "$GW_PID" 2>/dev/null; then
        say "Stopping the gateway (pid $GW_PID, SIGTERM${1:+; $1})"
        stop_pid "$GW_PID" "the gateway" TERM 60
    fi
}

# stop_left_computes: computes of the gateway's native backend in GW_DIR
# still running once it is gone (e.g. if it was killed).
stop_left_computes() {
    local pidfile pid
    for pidfile in "$GW_DIR"/native/databases/*/pgdata/postmaster.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(head -n 1 "$pidfile")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            echo "$SCRIPT_NAME: stopping a compute left running (pid $pid)" >&2
            as_ref "$PG_BIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 \
                || kill -QUIT "$pid" 2>/dev/null
        fi
    done
}

# stop_reference_pg MODE...: pg_ctl stop of REF_PGDATA if it runs, with each
# shutdown MODE in turn until one succeeds.
stop_reference_pg() {
    local mode
    [[ -f "$REF_PGDATA/postmaster.pid" ]] || return 0
    say "Stopping the reference postgres"
    for mode in "$@"; do
        as_ref "$PG_BIN/pg_ctl" -D "$REF_PGDATA" -m "$mode" -w stop >/dev/null 2>&1 && return 0
    done
    return 1
}

# show_gateway_log RC: after a failure (RC non-zero), the end of GW_LOG.
show_gateway_log() {
    if (($1 != 0)) && [[ -s "$GW_LOG" ]]; then
        echo "$SCRIPT_NAME: failed (exit $1); last lines of the gateway log:" >&2
        tail -n 20 "$GW_LOG" >&2
    fi
}

# remove_tmp [NOTE]: rm -rf TMP, unless KEEP_TMP=1.
# shellcheck disable=SC2120 # NOTE is optional
remove_tmp() {
    if [[ "${KEEP_TMP:-}" == 1 ]]; then
        say "Keeping $TMP (KEEP_TMP=1${1:+; $1})"
    else
        rm -rf "$TMP"
    fi
}
