"""The architecture, enforced: every import goes down the layers (so there are no import cycles),
only the seam module starts processes, and only the entry points read the environment.

Imports inside functions count as much as those at the top: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "git_remote_relay"

# Lower numbers are lower layers; a module may import only from strictly lower layers.
LAYERS = {
    "__init__": 0, "errors": 0, "quoting": 0,
    "url": 1, "pktline": 1, "gitcmd": 1, "selection": 1, "stepcache": 1, "gittrace": 1,
    "lfs": 2, "lfslocal": 3,
    "ui": 2, "settings": 2, "protocol": 2, "limits": 2, "v0http": 3,
    "transport.cookies": 2, "transport.httpoptions": 2, "transport.pinning": 2, "transport.pace": 2,
    "transport.base": 3, "transport.credential": 3, "transport.httpclient": 3,
    "transport": 4, "transport.process": 4, "transport.daemon": 4, "transport.http": 4, "transport.memory": 4,
    "transport.session": 5,
    "push": 6, "fetch": 6, "history": 6, "stats": 6, "passthrough": 6, "tap": 6,
    "split": 7, "fetchsteps": 7, "signedpush": 7, "lfssync": 7, "lfsfind": 7,
    "localpush": 8, "syncplan": 8,
    "sync": 9, "fleet": 9,
    "helper": 10,
    "cli": 11,
}


# mama-ssh, the same way: it starts for every ssh connection git makes, so its plan, its pool
# decisions, running a session and the admin reports are apart, and each is importable alone.
MAMA = ROOT / "mama_ssh"
MAMA_LAYERS = {
    "__init__": 0, "argv": 0, "mux": 0, "options": 0, "setting": 0, "slots": 0, "state": 0,
    "master": 1,
    "probe": 2, "pool": 2,
    "plan": 3,
    "session": 4, "report": 4,
    "cli": 5,
}
PACKAGES = {"git_remote_relay": (PACKAGE, LAYERS), "mama_ssh": (MAMA, MAMA_LAYERS)}


def package_of(path: Path) -> str:
    return "mama_ssh" if path.is_relative_to(MAMA) else "git_remote_relay"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGES[package_of(path)][0]).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Modules of its own package that ``path`` imports, as that package's layer names."""
    top = package_of(path)
    layers = PACKAGES[top][1]
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    if here == ["__init__"]:
        package = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith(top):
                    continue
                base = (node.module or "").split(".")[1:]
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join([*base, alias.name])
                found.add(candidate if candidate in layers else ".".join(base) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(top):
                    found.add(".".join(alias.name.split(".")[1:]) or "__init__")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))
MAMA_MODULES = sorted(MAMA.rglob("*.py"))
EVERY = MODULES + MAMA_MODULES


def test_every_module_has_a_layer() -> None:
    missing = [f"{package_of(p)}.{module_name(p)}" for p in EVERY if module_name(p) not in PACKAGES[package_of(p)][1]]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: f"{package_of(p)}.{module_name(p)}")
def test_imports_only_go_down(path: Path) -> None:
    layers = PACKAGES[package_of(path)][1]
    me = module_name(path)
    upward = sorted(dep for dep in imports_of(path) if dep != me and layers.get(dep, 99) >= layers[me])
    assert not upward, f"{me} (layer {layers[me]}) imports {upward} from its own layer or above"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: f"{package_of(p)}.{module_name(p)}")
def test_no_module_is_over_600_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 600, f"{path.name} has {lines} lines: split it by what its parts are about"


def _calls(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and f"{node.value.id}.{node.attr}" in names:
            hits.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return hits


def test_only_the_seam_starts_processes() -> None:
    spawning = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_output", "subprocess.check_call",
                "os.system", "os.popen", "os.execvp", "os.execv", "os.spawnv"}
    hits = [h for p in MODULES if p.name != "gitcmd.py" for h in _calls(p, spawning)]
    assert not hits, f"start processes through gitcmd.spawn/run_command only: {hits}"


def test_only_the_entry_points_read_the_environment() -> None:
    hits = [h for p in EVERY if p.name != "cli.py" for h in _calls(p, {"os.environ", "os.getenv"})]
    assert not hits, f"only cli.py reads the process environment; pass env down instead: {hits}"
