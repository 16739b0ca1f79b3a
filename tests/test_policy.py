"""Hostile and forbidden inner URLs are refused by the real helper before any connection is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import git

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "address, words",
    [
        ("ext::sh -c touch% /tmp/pwned", "cannot wrap another remote helper"),
        ("fd::3", "cannot wrap another remote helper"),
        ("ssh://-oProxyCommand=touch%20/tmp/pwned/x", "strange hostname"),
        ("-oProxyCommand=touch:x", "strange hostname"),
        ("ssh://-user@host/x", "strange user"),
        ("127.0.0.1:-x", "strange pathname"),
        ("ssh://host:-22/x", "strange port"),
        ("ftp://host/x", "unsupported transport"),
    ],
    ids=["ext helper", "fd helper", "dash host", "dash path local", "dash user", "dash path", "dash port", "ftp"],
)
def test_hostile_urls_are_refused(address: str, words: str, tmp_path: Path, workspace: Path) -> None:
    marker = Path("/tmp/pwned")
    res = git("ls-remote", "relay::" + address, cwd=tmp_path, check=False)
    assert res.returncode != 0
    assert words in res.stderr, res.stderr
    assert not marker.exists()


def test_git_allow_protocol_applies_to_the_inner_scheme(tmp_path: Path, workspace: Path) -> None:
    repo = tmp_path / "r.git"
    git("init", "-q", "--bare", str(repo))
    env = dict(os.environ, GIT_ALLOW_PROTOCOL="relay:https")
    res = git("ls-remote", f"relay::file://{repo}", env=env, check=False, cwd=tmp_path)
    assert res.returncode != 0
    assert "transport 'file' not allowed" in res.stderr
    env["GIT_ALLOW_PROTOCOL"] = "relay:file"
    assert git("ls-remote", f"relay::file://{repo}", env=env, cwd=tmp_path).returncode == 0


def test_protocol_allow_config_never(tmp_path: Path, workspace: Path) -> None:
    repo = tmp_path / "r.git"
    git("init", "-q", "--bare", str(repo))
    res = git("-c", "protocol.file.allow=never", "ls-remote", f"relay::{repo}", check=False, cwd=tmp_path)
    assert res.returncode != 0
    assert "not allowed" in res.stderr


def test_credentials_never_printed_in_errors(tmp_path: Path, workspace: Path) -> None:
    res = git("ls-remote", "relay::https://bob:hunter2-secret@127.0.0.1:1/x.git", check=False, cwd=tmp_path,
              env=dict(os.environ, GIT_RELAY_TRACE="1"))
    assert res.returncode != 0
    assert "hunter2-secret" not in res.stderr
    assert "unable to access" in res.stderr
