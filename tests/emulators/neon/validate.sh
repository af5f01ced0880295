#!/usr/bin/env bash
# Validates the emulator with Neon's official client (@neondatabase/api-client
# from npm, pinned in client/package-lock.json): starts the emulator binary,
# creates a project and a branch through the client, gets connection strings
# and runs psql on them through the SNI proxy (PGHOSTADDR=127.0.0.1,
# PGPORT=<proxy port>, sslmode=verify-full against the emulator's CA).
#
#   tests/emulators/neon/validate.sh [path/to/neon-emulator]
#
# Without an argument the binary is built with cargo (CARGO_TARGET_DIR is honoured).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-${NEON_EMULATOR_BIN:-}}"
if [[ -z "$bin" ]]; then
  (cd "$here" && cargo build -q -p ogel-neon-emulator --bin neon-emulator)
  bin="${CARGO_TARGET_DIR:-$here/../../../target}/debug/neon-emulator"
fi
for tool in node npm psql; do
  command -v "$tool" >/dev/null || { echo "validate.sh: $tool is required" >&2; exit 1; }
done

# The official client, exactly as locked.
if [[ ! -d "$here/client/node_modules/@neondatabase/api-client" ]]; then
  (cd "$here/client" && npm ci --no-audit --no-fund --loglevel=error)
fi

work="$(mktemp -d /tmp/neon-emu-validate-XXXXXX)"
chmod 755 "$work"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

key="validate-$(date +%s)-$$"
"$bin" --data-dir "$work/data" --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 \
  --api-key "$key" >"$work/ready" 2>"$work/log" &
pid=$!
for _ in $(seq 1 1200); do
  [[ -s "$work/ready" ]] && break
  kill -0 "$pid" 2>/dev/null || { echo "validate.sh: the emulator exited:" >&2; cat "$work/log" >&2; exit 1; }
  sleep 0.1
done
[[ -s "$work/ready" ]] || { echo "validate.sh: the emulator did not get ready" >&2; exit 1; }
field() { node -e 'const o = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(o[process.argv[2]])' "$1" "$2"; }
api="$(field "$work/ready" api)"
proxy="$(field "$work/ready" proxy)"
ca="$(field "$work/ready" ca)"

export NEON_API_HOST="$api" NEON_API_KEY="$key"
node "$here/client/validate.mjs" create-project >"$work/project.json"
project_id="$(field "$work/project.json" project_id)"
main_uri="$(field "$work/project.json" uri)"

# psql on the URI the client got: the host name is the endpoint's (SNI),
# the address and port are the proxy's.
export PGHOSTADDR=127.0.0.1 PGPORT="${proxy##*:}" PGSSLROOTCERT="$ca" PGCONNECT_TIMEOUT=60
unset PGHOST PGUSER PGDATABASE PGPASSWORD
run_psql() { psql -X -At -v ON_ERROR_STOP=1 "${1/sslmode=require/sslmode=verify-full}" -c "$2"; }
run_psql "$main_uri" "CREATE TABLE validate (note text); INSERT INTO validate VALUES ('written on main')" >/dev/null
got="$(run_psql "$main_uri" "SELECT note FROM validate")"
[[ "$got" == "written on main" ]] || { echo "validate.sh: main read back '$got'" >&2; exit 1; }

node "$here/client/validate.mjs" create-branch "$project_id" >"$work/branch.json"
branch_uri="$(field "$work/branch.json" uri)"
got="$(run_psql "$branch_uri" "SELECT note FROM validate")"
[[ "$got" == "written on main" ]] || { echo "validate.sh: the branch read '$got'" >&2; exit 1; }
run_psql "$branch_uri" "INSERT INTO validate VALUES ('written on the branch')" >/dev/null
count="$(run_psql "$main_uri" "SELECT count(*) FROM validate")"
[[ "$count" == "1" ]] || { echo "validate.sh: main sees $count rows after a branch write" >&2; exit 1; }

echo "validate.sh: @neondatabase/api-client created project $project_id and a branch; psql wrote and read through the proxy: OK"
