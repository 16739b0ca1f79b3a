#!/usr/bin/env bash
# Install git-remote-relay into its own virtual environment and put its commands on PATH.
#
#   ./install.sh          install (idempotent; run again to upgrade)
#   ./install.sh --dev    also what the tests need: an editable install with pytest in ./.venv,
#                         and the servers (OpenSSH server, lighttpd) and git-lfs from the system's packages
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

usable() {  # the interpreter behind $1 (resolving pyenv-style shims), if it is >= 3.11 and can make a venv with pip
  command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || return 1
  "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'
}

find_python() {
  # PYTHON decides. Otherwise the Python that starts fastest: git starts mama-ssh and the helper
  # on every operation, and interpreters differ (a static, PGO-built one such as Debian's starts
  # in 7 ms where a shared, unoptimised build takes 11).
  if [ -n "${PYTHON:-}" ]; then usable "$PYTHON"; return; fi
  local found=() candidate real
  for candidate in python3 python3.13 python3.12 python3.11 /usr/bin/python3 /usr/local/bin/python3; do
    real=$(usable "$candidate") || continue
    case " ${found[*]-} " in *" $real "*) ;; *) found+=("$real") ;; esac
  done
  [ ${#found[@]} -gt 0 ] || return 1
  [ ${#found[@]} -eq 1 ] && { echo "${found[0]}"; return 0; }
  "${found[0]}" -I -S - "${found[@]}" <<'PY'
import subprocess, sys, time
def start(py):  # the best of 15 starts, in seconds
    best = 1e9
    for _ in range(15):
        t = time.perf_counter()
        subprocess.run([py, "-I", "-S", "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - t)
    return best
times = sorted((start(py), py) for py in sys.argv[1:])
sys.stderr.write("install.sh: the Pythons found start in " + ", ".join(f"{t * 1000:.1f} ms ({py})" for t, py in times) + "\n")
print(times[0][1])
PY
}

python=$(find_python) || die "Python 3.11 or newer with the venv module is needed (Debian: apt-get install python3 python3-venv)"
say "using $python"

fresh_venv() {  # make $1 with $python, again if it was made with another interpreter
  if [ -x "$1/bin/python" ] && [ "$("$1/bin/python" -c 'import os, sys; print(os.path.realpath(sys._base_executable))')" = "$python" ]; then
    return 0
  fi
  "$python" -m venv --clear "$1"
}
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
  command -v git-lfs >/dev/null 2>&1 || missing+=(git-lfs)  # the client that checks the LFS tests
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
  fresh_venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[test]"
  say "development install ready in $venv"
  say "run the tests with: .venv/bin/python -m pytest -q"
  exit 0
fi

mkdir -p "$prefix" "$bindir"
fresh_venv "$prefix/venv"
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
