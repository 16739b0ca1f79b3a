"""./install.sh as a user runs it: its own venv, lean launchers, commands that work from PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import make_source

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_install_makes_working_lean_launchers(tmp_path: Path, workspace: Path) -> None:
    prefix, bindir = tmp_path / "prefix", tmp_path / "bin"
    env = dict(os.environ, RELAY_PREFIX=str(prefix), RELAY_BIN=str(bindir))
    proc = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in ("git-remote-relay", "git-relay", "mama-ssh"):
        launcher = (bindir / name).resolve()
        first = launcher.read_text().splitlines()[0]
        assert first == f"#!{prefix}/venv/bin/python -IS", first
    source = make_source(tmp_path / "src")
    path_env = dict(os.environ, PATH=f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    listed = subprocess.run(["git", "ls-remote", f"relay::{source}"], env=path_env, capture_output=True, text=True)
    assert listed.returncode == 0 and "refs/heads/main" in listed.stdout, listed.stderr
    probe = subprocess.run([str(bindir / "git-relay"), "probe", str(source)], env=path_env, capture_output=True, text=True)
    assert probe.returncode == 0 and "protocol: v2" in probe.stdout, probe.stderr
    # a second run upgrades in place, in the same venv
    cfg = prefix / "venv" / "pyvenv.cfg"
    made = cfg.stat().st_mtime_ns
    again = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert cfg.stat().st_mtime_ns == made, "the venv was kept"


def test_install_takes_the_python_that_starts_fastest_unless_told(tmp_path: Path) -> None:
    """git starts mama-ssh and the helper on every operation: among the Pythons found, install.sh
    takes the one that starts fastest, and says so; PYTHON overrides, and the venv follows it."""
    prefix, bindir = tmp_path / "prefix", tmp_path / "bin"
    env = dict(os.environ, RELAY_PREFIX=str(prefix), RELAY_BIN=str(bindir))
    env.pop("PYTHON", None)
    proc = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    chosen = proc.stderr.split("install.sh: using ", 1)[1].split("\n", 1)[0]
    assert f"executable = {chosen}\n" in (prefix / "venv" / "pyvenv.cfg").read_text()
    found = [part.rsplit("(", 1)[1].rstrip(")") for part in proc.stderr.split("start in ", 1)[1].split("\n", 1)[0].split(", ")] \
        if "start in " in proc.stderr else [chosen]
    assert found[0] == chosen, "the fastest comes first and is taken"
    other = next((py for py in found if py != chosen), None)
    if other is None:
        return  # one Python on this machine: nothing to choose (CI's machine has two)
    told = subprocess.run([str(ROOT / "install.sh")], env=dict(env, PYTHON=other), capture_output=True, text=True, timeout=600)
    assert told.returncode == 0, told.stderr
    assert f"executable = {other}\n" in (prefix / "venv" / "pyvenv.cfg").read_text(), "the venv was made again with PYTHON"
