#!/usr/bin/env bash
# Install git-remote-relay into its own virtual environment and put its commands on PATH.
#
#   ./install.sh          install (idempotent; run again to upgrade)
#   ./install.sh --dev    also what the tests need: an editable install with pytest in ./.venv,
#                         and the servers (OpenSSH server, lighttpd) from the system's packages
#   ./install.sh --configure-ssh
#                         also make mama-ssh git's ssh command (git config --global core.sshCommand),
#                         only if no other ssh command is configured
#
# As root:    venv in /opt/git-remote-relay, commands linked into /usr/local/bin.
# As a user:  venv in ~/.local/share/git-remote-relay, commands linked into ~/.local/bin.
# Override with RELAY_PREFIX (venv location) and RELAY_BIN (where the commands are linked).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dev=0
configure_ssh=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --configure-ssh) configure_ssh=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

find_python() {
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

python=$(find_python) || die "Python 3.11 or newer with the venv module is needed (Debian: apt-get install python3 python3-venv)"
command -v git >/dev/null 2>&1 || die "git is needed (Debian: apt-get install git)"

if [ "$(id -u)" = 0 ]; then
  prefix=${RELAY_PREFIX:-/opt/git-remote-relay}
  bindir=${RELAY_BIN:-/usr/local/bin}
else
  prefix=${RELAY_PREFIX:-${XDG_DATA_HOME:-$HOME/.local/share}/git-remote-relay}
  bindir=${RELAY_BIN:-$HOME/.local/bin}
fi

install_system_packages() {
  # Only what is missing; only where we may (root, or passwordless sudo).
  local missing=()
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the https tests make a certificate
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      say "the tests need these packages, which only root can install: ${missing[*]}"
      say "run: sudo apt-get install ${missing[*]}   (tests that need them are skipped until then; under CI=true they fail)"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here: install ${missing[*]} with your package manager for the integration tests"
    return 0
  fi
  say "installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages try to start their services; the tests run their own instances instead.
}

if [ "$dev" = 1 ]; then
  install_system_packages
  venv="$here/.venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[test]"
  say "development install ready in $venv"
  say "run the tests with: .venv/bin/python -m pytest -q"
  exit 0
fi

mkdir -p "$prefix" "$bindir"
[ -x "$prefix/venv/bin/python" ] || "$python" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$here"
# Our own launchers instead of pip's: those import `re` first (~10 ms), and git starts the helper
# (and mama-ssh) on every operation. -I: no PYTHONPATH, no user site, no script directory on
# sys.path; -S: no site module (~5 ms), the venv's own package directories are put on sys.path.
libs=$("$prefix/venv/bin/python" -I -c 'import sysconfig; p = sysconfig.get_paths(); print(repr(sorted({p["purelib"], p["platlib"]})))')
write_launcher() {  # name module function
  local target="$prefix/venv/bin/$1"
  printf '#!%s -IS\nimport sys\nsys.path[:0] = %s\nfrom %s import %s\nsys.exit(%s())\n' \
    "$prefix/venv/bin/python" "$libs" "$2" "$3" "$3" > "$target.tmp"
  chmod 755 "$target.tmp"
  mv -f "$target.tmp" "$target"
}
write_launcher git-remote-relay git_remote_relay.cli helper_main
write_launcher git-relay git_remote_relay.cli relay_main
write_launcher mama-ssh mama_ssh.cli main
for cmd in git-remote-relay git-relay mama-ssh; do
  ln -sf "$prefix/venv/bin/$cmd" "$bindir/$cmd"
done
say "installed into $prefix/venv; commands linked into $bindir"
case ":$PATH:" in
  *":$bindir:"*) ;;
  *) say "add $bindir to your PATH, e.g.: echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.profile" ;;
esac

if [ "$configure_ssh" = 1 ]; then
  current=$(git config --global --get core.sshCommand || true)
  if [ -z "$current" ]; then
    git config --global core.sshCommand "$bindir/mama-ssh"
    say "git now uses mama-ssh for ssh (core.sshCommand); undo with: git config --global --unset core.sshCommand"
  elif [ "$current" = "$bindir/mama-ssh" ] || [ "$current" = mama-ssh ]; then
    say "core.sshCommand already uses mama-ssh"
  else
    say "core.sshCommand is already set to '$current': left alone. To use mama-ssh, set it yourself, e.g.:"
    say "  git config --global core.sshCommand 'mama-ssh <the same options>'   (mama-ssh passes them on to ssh)"
  fi
fi
