#!/usr/bin/env bash
# Install PostgreSQL with TimescaleDB (Apache-2 edition) for tianyan's local stack.
#
#   install-postgres.sh BUILD_DIR
#
# Debian 12 (bookworm): PostgreSQL 15 from Debian, TimescaleDB built from Debian 13's own
# source package (only the source comes from trixie, through a private apt state directory so
# the system's package lists are untouched; nothing binary is installed from another suite).
# Debian 13 (trixie): Debian's binary postgresql-17-timescaledb.
# Idempotent: a second run finds everything in place and does nothing.
set -euo pipefail

TSDB_VERSION=2.19.3
TSDB_DEB_VERSION=2.19.3+dfsg-1+deb13u1
build_dir=${1:?usage: install-postgres.sh BUILD_DIR}

say() { printf 'tianyan stack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

debian_major=$(cut -d. -f1 /etc/debian_version 2>/dev/null || echo unknown)
case "$debian_major" in
  12) pg_major=15 ;;
  13) pg_major=17 ;;
  *) die "unsupported system (Debian $debian_major): install PostgreSQL 15-17 with TimescaleDB ${TSDB_VERSION} yourself and point TIANYAN_DATABASE_URL at it" ;;
esac

pg_lib=/usr/lib/postgresql/$pg_major/lib
pg_ext=/usr/share/postgresql/$pg_major/extension

if [[ -x /usr/lib/postgresql/$pg_major/bin/postgres && -f $pg_lib/timescaledb-$TSDB_VERSION.so \
      && -f $pg_ext/timescaledb--$TSDB_VERSION.sql ]]; then
  exit 0
fi

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    die "missing packages: $*; install them (as root: apt-get install $*) and run again"
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "$@" >&2
  fi
}

if [[ $pg_major == 17 ]]; then
  say "installing postgresql-17 and postgresql-17-timescaledb from Debian"
  apt_install postgresql-17 postgresql-17-timescaledb
  exit 0
fi

needed=()
for pkg in postgresql-15 postgresql-server-dev-15 libssl-dev cmake; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || needed+=("$pkg")
done
if ((${#needed[@]})); then
  say "installing ${needed[*]} from Debian"
  apt_install "${needed[@]}"
fi
for tool in gcc make cmake; do
  command -v "$tool" >/dev/null || die "building TimescaleDB needs $tool: install it (apt-get install build-essential cmake) and run again"
done

src_dir=$build_dir/timescaledb-$TSDB_VERSION
if [[ ! -f $src_dir/bootstrap ]]; then
  say "fetching Debian's timescaledb $TSDB_DEB_VERSION source package"
  mkdir -p "$build_dir/apt/lists/partial" "$build_dir/apt/etc"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$build_dir/apt/etc/sources.list"
  apt_opts=(-o "Dir::State::Lists=$build_dir/apt/lists" -o "Dir::Etc::sourcelist=$build_dir/apt/etc/sources.list"
            -o "Dir::Etc::sourceparts=-" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
  apt-get -q "${apt_opts[@]}" update >&2
  (cd "$build_dir" && apt-get -q "${apt_opts[@]}" source --download-only "timescaledb=$TSDB_DEB_VERSION" >&2)
  tar -C "$build_dir" -xf "$build_dir/timescaledb_${TSDB_VERSION}+dfsg.orig.tar.xz"
fi

say "building TimescaleDB $TSDB_VERSION (Apache-2 edition) for PostgreSQL $pg_major"
(
  cd "$src_dir"
  rm -rf build
  ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DUSE_TELEMETRY=OFF -DPG_CONFIG=/usr/lib/postgresql/$pg_major/bin/pg_config >&2
  make -C build -j"$(nproc)" install >&2
)
[[ -f $pg_lib/timescaledb-$TSDB_VERSION.so ]] || die "TimescaleDB build finished but $pg_lib/timescaledb-$TSDB_VERSION.so is missing"
say "TimescaleDB $TSDB_VERSION installed"
