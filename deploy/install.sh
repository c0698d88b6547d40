#!/usr/bin/env bash
# Installs lienwatch as a systemd service. Idempotent and safe on upgrade: the binary, the unit
# and the sysusers file are replaced; the config and the secret files are never overwritten.
#
#   deploy/install.sh                      build (cargo, release) and install to /usr/local
#   deploy/install.sh --bin PATH           install an already built binary instead of building
#   deploy/install.sh --prefix /opt/lw     binary in /opt/lw/bin (ExecStart= follows)
#   DESTDIR=/tmp/stage deploy/install.sh   stage into a directory: no users, no chown, no systemctl
#
# Options may also be given as environment variables: PREFIX, DESTDIR, LIENWATCH_BIN.
set -euo pipefail

usage() {
  sed -n '2,10s/^# \{0,1\}//p' "$0"
  exit "${1:-0}"
}

here="$(cd "$(dirname "$0")" && pwd)"
src="$(dirname "$here")"
prefix="${PREFIX:-/usr/local}"
destdir="${DESTDIR:-}"
bin="${LIENWATCH_BIN:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --bin) bin="${2:?--bin needs a file}"; shift 2 ;;
    --bin=*) bin="${1#*=}"; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done

case "$prefix" in
  /*) ;;
  *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;;
esac
destdir="${destdir%/}"
staged=0
[ -n "$destdir" ] && staged=1

if [ "$staged" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or stage with DESTDIR=... / --destdir ...)" >&2
  exit 1
fi

say() { printf '%s\n' "$*"; }
# Creates a directory (0755) if missing; an existing one keeps its owner and mode.
mkd() { [ -d "$1" ] || install -d -m 0755 "$1"; }

# 1. The binary.
if [ -z "$bin" ]; then
  say "building lienwatch (release)"
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # Under sudo: build as the user who ran it, with their toolchain (sudo's PATH leaves out
    # ~/.cargo/bin) and without leaving a root-owned target/ in their checkout.
    home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
    su "$SUDO_USER" -s /bin/sh -c "cd '$src' && PATH='$home/.cargo/bin':\"\$PATH\" cargo build --release --locked" || {
      echo "install.sh: the build failed; build as $SUDO_USER with 'cargo build --release', then run deploy/install.sh --bin target/release/lienwatch" >&2
      exit 1
    }
  elif command -v cargo >/dev/null 2>&1; then
    (cd "$src" && cargo build --release --locked)
  else
    echo "install.sh: cargo not found; build with 'cargo build --release', then run deploy/install.sh --bin target/release/lienwatch" >&2
    exit 1
  fi
  bin="$src/target/release/lienwatch"
fi
[ -x "$bin" ] || { echo "install.sh: $bin is not an executable" >&2; exit 1; }
bindir="$prefix/bin"
mkd "$destdir$bindir"
# install(1) writes a new file and renames it into place: a running daemon keeps its old binary
# until it is restarted.
install -m 0755 "$bin" "$destdir$bindir/lienwatch.new"
mv -f "$destdir$bindir/lienwatch.new" "$destdir$bindir/lienwatch"
say "installed $bindir/lienwatch"

# 2. The system user (sysusers.d).
mkd "$destdir/usr/lib/sysusers.d"
install -m 0644 "$here/lienwatch.sysusers" "$destdir/usr/lib/sysusers.d/lienwatch.conf"
say "installed /usr/lib/sysusers.d/lienwatch.conf"
if [ "$staged" = 0 ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/lienwatch.conf
  elif ! getent passwd lienwatch >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/lienwatch --no-create-home \
      --shell /usr/sbin/nologin lienwatch
  fi
fi

# 3. The unit. Replaced on every install; local changes belong in a drop-in (systemctl edit).
mkd "$destdir/etc/systemd/system"
sed "s#/usr/local/bin/lienwatch#$bindir/lienwatch#g" "$here/lienwatch.service" \
  >"$destdir/etc/systemd/system/lienwatch.service.new"
chmod 0644 "$destdir/etc/systemd/system/lienwatch.service.new"
mv -f "$destdir/etc/systemd/system/lienwatch.service.new" "$destdir/etc/systemd/system/lienwatch.service"
say "installed /etc/systemd/system/lienwatch.service"

# 4. Config and secrets: created when absent, never overwritten. Readable by root and the
# lienwatch group only (0640 root:lienwatch).
etc="$destdir/etc/lienwatch"
mkd "$etc"
own() {
  # Staged installs (and hosts without the group yet) keep the installing user's ownership.
  if [ "$staged" = 0 ]; then chown root:lienwatch "$1"; fi
}
if [ -e "$etc/lienwatch.toml" ]; then
  # Keep the operator's config; leave the new example next to it for comparison.
  install -m 0640 "$here/lienwatch.toml" "$etc/lienwatch.toml.example"
  own "$etc/lienwatch.toml.example"
  say "kept /etc/lienwatch/lienwatch.toml (the new example is /etc/lienwatch/lienwatch.toml.example)"
else
  install -m 0640 "$here/lienwatch.toml" "$etc/lienwatch.toml"
  own "$etc/lienwatch.toml"
  say "installed /etc/lienwatch/lienwatch.toml"
fi
secret() {
  local f="$etc/$1"
  if [ -s "$f" ]; then
    say "kept /etc/lienwatch/$1"
    return
  fi
  # 32 random bytes as 64 hex digits, written with a private umask, then opened to the group.
  (
    umask 077
    head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$f.new"
    printf '\n' >>"$f.new"
  )
  own "$f.new"
  chmod 0640 "$f.new"
  mv -f "$f.new" "$f"
  say "generated /etc/lienwatch/$1"
}
secret admin.token
secret webhook.secret

# 5. Tell systemd.
running_systemd=0
[ "$staged" = 0 ] && [ -d /run/systemd/system ] && running_systemd=1
if [ "$running_systemd" = 1 ]; then
  systemctl daemon-reload
  say "systemctl daemon-reload: done"
fi

if [ "$staged" = 0 ]; then
  if ! "$bindir/lienwatch" check-config --config /etc/lienwatch/lienwatch.toml; then
    say "WARNING: /etc/lienwatch/lienwatch.toml does not pass check-config; fix it before starting"
  fi
fi

say ""
say "Next steps:"
if [ "$staged" = 1 ]; then
  say "  - staged into $destdir; on the target host, create the user: systemd-sysusers"
  say "  - the staged files keep this user's ownership: on the target host,"
  say "    chown root:lienwatch /etc/lienwatch/* (the service reads them as group lienwatch)"
  say "  - the staged admin.token and webhook.secret are one host's secrets: a package for"
  say "    several hosts must leave them out (install.sh on each host makes its own)"
fi
say "  - edit /etc/lienwatch/lienwatch.toml: listeners, [[webhook]] url, rules"
say "  - give your collection system /etc/lienwatch/webhook.secret (webhook signatures) and"
say "    your API clients /etc/lienwatch/admin.token (Authorization: Bearer ...)"
say "  - lienwatch check-config --config /etc/lienwatch/lienwatch.toml"
if [ "$running_systemd" = 1 ] && systemctl is-active --quiet lienwatch; then
  say "  - upgrade: systemctl restart lienwatch   (the running daemon still uses the old binary)"
else
  say "  - systemctl enable --now lienwatch"
fi
say "  - journalctl -u lienwatch -f;  curl -s http://127.0.0.1:8080/metrics"
