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
    "ui": 2, "settings": 2, "protocol": 2, "limits": 2,
    "transport.cookies": 2, "transport.base": 3, "transport.credential": 3, "transport.httpclient": 3,
    "transport": 4, "transport.process": 4, "transport.daemon": 4, "transport.http": 4, "transport.memory": 4,
    "transport.session": 5,
    "push": 6, "fetch": 6, "history": 6, "stats": 6, "passthrough": 6, "tap": 6,
    "split": 7, "fetchsteps": 7,
    "localpush": 8, "syncplan": 8,
    "sync": 9,
    "helper": 10,
    "cli": 11,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports, as LAYERS names."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    if here == ["__init__"]:
        package = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("git_remote_relay"):
                    continue
                base = (node.module or "").split(".")[1:]
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join([*base, alias.name])
                found.add(candidate if candidate in LAYERS else ".".join(base) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("git_remote_relay"):
                    found.add(".".join(alias.name.split(".")[1:]) or "__init__")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    missing = [module_name(p) for p in MODULES if module_name(p) not in LAYERS]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_go_down(path: Path) -> None:
    me = module_name(path)
    upward = sorted(dep for dep in imports_of(path) if dep != me and LAYERS.get(dep, 99) >= LAYERS[me])
    assert not upward, f"{me} (layer {LAYERS[me]}) imports {upward} from its own layer or above"


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
    hits = [h for p in MODULES if p.name != "cli.py" for h in _calls(p, {"os.environ", "os.getenv"})]
    assert not hits, f"only cli.py reads the process environment; pass env down instead: {hits}"
