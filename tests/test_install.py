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
    # a second run upgrades in place
    again = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
