"""``git relay sync --manifest FILE``: many pairs, bounded concurrency, shards, one report.

A manifest (TOML) lists pairs, each with its own options, plus defaults and name templates::

    [defaults]                  # any pair option, for every pair
    tags = true

    [[pair]]
    source = "ssh://git@src.example/team/app.git"
    target = "https://dst.example/team/app.git"
    branches = ["main", "release"]

    [[template]]                # one pair per name
    source = "ssh://git@src.example/{name}.git"
    target = "https://dst.example/mirror/{name}.git"
    names = ["lib-a", "lib-b"]

Pair options: ``branches``, ``map``, ``tags``, ``all_refs``, ``exclude``, ``prune``,
``force_with_lease``, ``atomic``, ``spool``, ``lfs`` (default true), ``lfs_history``, ``max_pack_bytes``,
``source_lfs_url``, ``target_lfs_url`` (as the single-pair command's flags).

Each pair runs as its own ``git relay sync --json`` process (a crash or a stall stays with its
pair). ``--jobs N`` bounds how many run at once, and no host serves more than ``--per-host``
(default 4) at once, source and target alike, so no server sees a burst (sshd's MaxStartups,
rate limits). ``--shard K/N`` takes a stable share of the pairs (by a hash of source and target),
so N machines of a job array cover every pair exactly once with no coordinator. A pair is
idempotent: a re-run relays only what moved. Pairs start slowest first, by how long each took
the last time (remembered in the state directory), so the fleet does not wait at the end for
a big repository that started last.

Report: one JSON line per pair on stdout (status, refs relayed / blocked / refused, bytes,
elapsed, error), then a summary line; on a terminal, ``[k/n] name`` progress and a final table on
stderr. Exit 0: every pair done; 1: some pair failed or was blocked; 2: a bad manifest (nothing
ran). Credentials in manifest URLs never reach the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Mapping

from .errors import RelayError
from .gitcmd import DEVNULL, PIPE, spawn
from .limits import state_dir
from .url import parse, redact

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, BinaryIO

__all__ = ["Pair", "ManifestError", "load_manifest", "shard", "run_fleet"]

DEFAULT_PER_HOST = 4
_BOOL = ("tags", "all_refs", "prune", "force_with_lease", "atomic", "spool", "lfs", "lfs_history")
_LISTS = ("branches", "map", "exclude")
_URLS = ("source_lfs_url", "target_lfs_url")
_OPTIONS = (*_BOOL, *_LISTS, "max_pack_bytes", *_URLS)


class ManifestError(RelayError):
    """The manifest cannot be used: nothing runs."""


class Pair:
    """One source -> target relay and its options."""

    def __init__(self, source: str, target: str, options: dict[str, Any], name: str, line: int) -> None:
        self.source = source
        self.target = target
        self.options = options
        self.name = name
        self.line = line
        self.hosts: set[str] = set()  # the hosts it connects to (the scheduler's per-host cap)
        for url in (source, target):
            try:
                self.hosts.add(parse(url[len("relay::"):] if url.startswith("relay::") else url).host or "localhost")
            except RelayError:
                pass

    @property
    def key(self) -> str:
        return f"{self.source}\n{self.target}"

    def argv(self) -> list[str]:
        args = ["sync", "--json", "-q"]
        o = self.options
        for flag in _BOOL:
            if flag == "lfs":
                if o.get(flag) is False:
                    args.append("--no-lfs")
            elif o.get(flag):
                args.append("--" + flag.replace("_", "-"))
        for b in o.get("branches", []):
            args += ["--branch", b]
        for m in o.get("map", []):
            args += ["--map", m]
        for e in o.get("exclude", []):
            args += ["--exclude", e]
        if o.get("max_pack_bytes") is not None:
            args += ["--max-pack-bytes", str(o["max_pack_bytes"])]
        for key in _URLS:
            if o.get(key):
                args += ["--" + key.replace("_", "-"), str(o[key])]
        return [*args, self.source, self.target]


def _lines_of(text: str, header: str) -> list[int]:
    """The line numbers of each ``[[header]]`` table, in order."""
    return [i + 1 for i, line in enumerate(text.splitlines()) if line.strip().replace(" ", "") == f"[[{header}]]"]


def _check_options(where: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            raise ManifestError(f"{where}: unknown key '{key}'", f"known keys: {', '.join(allowed)}")
        if key in _BOOL and not isinstance(value, bool):
            raise ManifestError(f"{where}: '{key}' must be true or false")
        if key in _LISTS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ManifestError(f"{where}: '{key}' must be a list of strings")
        if key in ("source", "target", *_URLS) and not isinstance(value, str):
            raise ManifestError(f"{where}: '{key}' must be a string")
        if key == "max_pack_bytes" and not isinstance(value, (int, str)):
            raise ManifestError(f"{where}: 'max_pack_bytes' must be a number or a size like \"500m\"")
        out[key] = value
    return out


def _url(where: str, key: str, value: str) -> str:
    try:
        parse(value[len("relay::"):] if value.startswith("relay::") else value)
    except RelayError as exc:
        raise ManifestError(f"{where}: '{key}' is not a URL git accepts: {exc.message}") from None
    return value


def load_manifest(path: str) -> list[Pair]:
    """The pairs of a manifest; ``ManifestError`` naming the file, line and key when it is wrong."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc.strerror}") from exc
    text = raw.decode("utf-8", "replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: {exc}", "the manifest is TOML: see 'git relay sync --help'") from None
    unknown = [k for k in data if k not in ("defaults", "pair", "template")]
    if unknown:
        raise ManifestError(f"{path}: unknown table '{unknown[0]}'", "a manifest has [defaults], [[pair]] and [[template]] tables")
    defaults = _check_options(f"{path}: [defaults]", data.get("defaults", {}), _OPTIONS)
    pairs: list[Pair] = []
    pair_lines = _lines_of(text, "pair")
    for i, table in enumerate(data.get("pair", [])):
        line = pair_lines[i] if i < len(pair_lines) else 0
        where = f"{path}:{line}: pair {i + 1}"
        options = _check_options(where, table, ("source", "target", *_OPTIONS))
        for key in ("source", "target"):
            if key not in options:
                raise ManifestError(f"{where}: '{key}' is missing")
        source, target = _url(where, "source", options.pop("source")), _url(where, "target", options.pop("target"))
        pairs.append(Pair(source, target, {**defaults, **options}, redact(source).rsplit("/", 1)[-1] or source, line))
    template_lines = _lines_of(text, "template")
    for i, table in enumerate(data.get("template", [])):
        line = template_lines[i] if i < len(template_lines) else 0
        where = f"{path}:{line}: template {i + 1}"
        options = _check_options(where, table, ("source", "target", "names", *_OPTIONS))
        names = options.pop("names", None)
        if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
            raise ManifestError(f"{where}: 'names' must be a non-empty list of names")
        for key in ("source", "target"):
            if "{name}" not in str(options.get(key, "")):
                raise ManifestError(f"{where}: '{key}' must contain {{name}}")
        source, target = options.pop("source"), options.pop("target")
        for name in names:
            pairs.append(Pair(_url(where, "source", source.replace("{name}", name)), _url(where, "target", target.replace("{name}", name)),
                              {**defaults, **options}, name, line))
    seen: set[str] = set()
    for p in pairs:
        if p.key in seen:
            raise ManifestError(f"{path}:{p.line}: the pair {redact(p.source)} -> {redact(p.target)} is listed twice")
        seen.add(p.key)
    return pairs


def shard(pairs: list[Pair], spec: str) -> list[Pair]:
    """The pairs of shard ``K/N`` (K from 0, as JOB_COMPLETION_INDEX): a stable hash of each pair."""
    k_text, _, n_text = spec.partition("/")
    if not (k_text.isdigit() and n_text.isdigit()) or int(n_text) < 1 or int(k_text) >= int(n_text):
        raise ManifestError(f"bad --shard '{spec}'", "use K/N with 0 <= K < N, e.g. --shard $JOB_COMPLETION_INDEX/8")
    k, n = int(k_text), int(n_text)
    return [p for p in pairs if int.from_bytes(hashlib.sha256(p.key.encode()).digest()[:8], "big") % n == k]


class _Result:
    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.record: dict[str, Any] | None = None
        self.error = ""
        self.code = 0
        self.elapsed = 0.0

    def line(self) -> dict[str, Any]:
        rec = self.record or {}
        refs = rec.get("refs", [])
        relayed = [r["dst"] for r in refs if r.get("result") == "ok" and r.get("action") in ("create", "update", "force", "delete")]
        blocked = [{"ref": r["dst"], "reason": r.get("reason")} for r in refs if r.get("action") == "blocked"]
        refused = [{"ref": r["dst"], "reason": r.get("result")} for r in refs
                   if r.get("action") in ("create", "update", "force", "delete") and r.get("result") not in ("ok", "planned", None)
                   and r.get("action") != "blocked"]
        status = rec.get("status") or ("failed" if self.code else "ok")
        return {"name": self.pair.name, "source": redact(self.pair.source), "target": redact(self.pair.target), "status": status,
                "relayed": relayed, "blocked": blocked, "refused": refused, "bytes": rec.get("bytes", 0), "lfs": rec.get("lfs"),
                "throttled": rec.get("throttled") or [],
                "elapsed": round(self.elapsed, 3), "error": redact(self.error) or None}


def _run_one(pair: Pair, env: Mapping[str, str]) -> _Result:
    result = _Result(pair)
    started = time.monotonic()
    argv = [sys.executable, "-I", "-c", "import sys\nfrom git_remote_relay.cli import relay_main\nrelay_main(sys.argv[1:])",
            *pair.argv()]
    try:
        proc = spawn(argv, env=env, cwd=None, stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        out, err = proc.communicate(None)
        result.code = proc.wait()
    except OSError as exc:
        result.code, out, err = 128, b"", str(exc).encode()
    result.elapsed = time.monotonic() - started
    try:
        result.record = json.loads(out.decode("utf-8", "replace")) if out.strip() else None
    except ValueError:
        result.record = None
    fatal = [line for line in err.decode("utf-8", "replace").splitlines() if line.startswith(("fatal:", "error:"))]
    if result.code not in (0,) and fatal:
        result.error = fatal[0].partition(": ")[2]
    elif result.code not in (0,) and result.record is None:
        result.error = f"git relay sync exited with {result.code}"
    return result


def _timings_file(env: Mapping[str, str]) -> str:
    return os.path.join(state_dir(env), "fleet-times.json")


def _pair_id(pair: Pair) -> str:
    return hashlib.sha256(pair.key.encode()).hexdigest()[:20]


def _load_timings(env: Mapping[str, str]) -> dict[str, float]:
    try:
        with open(_timings_file(env), encoding="utf-8") as fh:
            data = json.load(fh)
        return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def _save_timings(env: Mapping[str, str], times: dict[str, float]) -> None:
    """Remember how long each pair took (merged with what other runs and shards wrote); an
    optimisation, so any failure is ignored."""
    try:
        path = _timings_file(env)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        merged = {**_load_timings(env), **{k: round(v, 3) for k, v in times.items()}}
        part = f"{path}.{os.getpid()}.tmp"
        with open(part, "w", encoding="utf-8") as fh:
            json.dump(merged, fh)
        os.replace(part, path)
    except OSError:
        pass


def longest_first(pairs: list[Pair], timings: dict[str, float]) -> list[Pair]:
    """Pairs never timed first (in manifest order), then the slowest of the last run first: the
    fleet's wall time is not then the slowest pair started last."""
    return sorted(pairs, key=lambda p: (_pair_id(p) in timings, -timings.get(_pair_id(p), 0.0)))


class _Scheduler:
    """Hands out pairs so that no host serves more than ``per_host`` at once (one, from the time
    it asked a pair to slow down)."""

    def __init__(self, pairs: list[Pair], per_host: int) -> None:
        self.waiting = list(pairs)
        self.per_host = per_host
        self.caps: dict[str, int] = {}  # hosts that answered 429 / 503: fewer pairs at once
        self.busy: dict[str, int] = {}
        self.lock = threading.Condition()

    def slow(self, host: str) -> bool:
        """(with ``lock`` held) One pair at a time on ``host`` from now on; False if it was already so."""
        if self.caps.get(host) == 1:
            return False
        self.caps[host] = 1
        return True

    def take(self) -> Pair | None:
        with self.lock:
            while self.waiting:
                for i, pair in enumerate(self.waiting):
                    if all(self.busy.get(h, 0) < self.caps.get(h, self.per_host) for h in pair.hosts):
                        for h in pair.hosts:
                            self.busy[h] = self.busy.get(h, 0) + 1
                        return self.waiting.pop(i)
                self.lock.wait()
            return None

    def done(self, pair: Pair) -> None:
        """(with ``lock`` held)"""
        for h in pair.hosts:
            self.busy[h] -= 1
        self.lock.notify_all()


def run_fleet(pairs: list[Pair], env: Mapping[str, str], jobs: int, per_host: int, out: BinaryIO, err: BinaryIO,
              quiet: bool = False) -> int:
    """Run every pair, ``jobs`` at once and at most ``per_host`` per host; the exit status."""
    total = len(pairs)
    terminal = err.isatty() and not quiet
    scheduler = _Scheduler(longest_first(pairs, _load_timings(env)), per_host)
    times: dict[str, float] = {}
    lines: list[dict[str, Any]] = []
    started = time.monotonic()

    def say(text: str) -> None:
        try:
            err.write(text.encode("utf-8", "replace"))
            err.flush()
        except (OSError, ValueError):
            pass

    def worker() -> None:
        while (pair := scheduler.take()) is not None:
            line = _run_one(pair, env).line()
            with scheduler.lock:
                if line["bytes"]:  # a run that moved nothing says nothing of how long the pair takes
                    times[_pair_id(pair)] = line["elapsed"]
                lines.append(line)
                for host in line["throttled"]:
                    if scheduler.slow(host) and not quiet:
                        say(f"relay: {host} asked to slow down (HTTP 429/503): one pair at a time there from now on\n")
                out.write((json.dumps(line) + "\n").encode())
                out.flush()
                if terminal:
                    say(_progress(len(lines), total, line))
                scheduler.done(pair)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(jobs, total)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _save_timings(env, times)
    failed = [line for line in lines if line["status"] not in ("ok", "planned")]
    summary = {"summary": True, "pairs": total, "ok": total - len(failed), "failed": len(failed),
               "bytes": sum(line["bytes"] or 0 for line in lines), "elapsed": round(time.monotonic() - started, 3)}
    out.write((json.dumps(summary) + "\n").encode())
    out.flush()
    if terminal:
        say(_table(lines, summary))
    return 1 if failed else 0


def _progress(done: int, total: int, line: dict[str, Any]) -> str:
    return f"[{done}/{total}] {line['name']}: {line['status']}" + (f" ({line['error']})" if line["error"] else "") + "\n"


def _table(lines: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The final table for a terminal: one row per pair, by name."""
    width = max([len(line["name"]) for line in lines] + [4])
    rows = ["", f"{'pair':<{width}}  {'status':<8}  {'refs':>4}  {'bytes':>12}  {'seconds':>7}"]
    for line in sorted(lines, key=lambda x: x["name"]):
        row = f"{line['name']:<{width}}  {line['status']:<8}  {len(line['relayed']):>4}  {line['bytes'] or 0:>12}  {line['elapsed']:>7.1f}"
        rows.append(row + (f"  {line['error']}" if line["error"] else ""))
    rows.append(f"{summary['ok']} of {summary['pairs']} pairs done in {summary['elapsed']:.1f}s")
    return "\n".join(rows) + "\n"


def default_jobs() -> int:
    return min(8, (os.cpu_count() or 2) * 2)
