"""Entry points: the only code that touches argv, the environment, real stdio and exit codes."""

from __future__ import annotations

import os
import sys

from .errors import RelayError
from .url import redact

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from typing import Any, BinaryIO, NoReturn

    from .ui import Reporter

__all__ = ["helper_main", "relay_main"]


def _fatal(stderr: BinaryIO, message: str, hint: str = "") -> None:
    if not message and not hint:
        return  # a child (git credential, say) already said why, as native git would have
    text = f"fatal: {redact(message)}\n"
    if hint:
        text += f"hint: {redact(hint)}\n"
    try:
        stderr.write(text.encode("utf-8", "replace"))
        stderr.flush()
    except (OSError, ValueError):
        pass


def _os_failure(exc: OSError) -> tuple[str, str]:
    """What a local I/O failure (a full disk, a read-only directory) says, as git says it: the
    cause and the file, and what to do; no traceback, for it is no bug of ours."""
    import errno

    if isinstance(exc, (ConnectionError, TimeoutError)) and not exc.filename:
        # a connection the engine did not wrap in its own words: say it is the network's
        return f"the connection to the remote broke ({exc.strerror or exc})", "check the network and run again; a re-run resumes"
    where = f" '{exc.filename}'" if exc.filename else ""
    message = f"cannot use{where}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return message, "free some disk space (or set TMPDIR to a roomier directory) and run again; a re-run resumes"
    return message, "check that path's permissions and space, and run again"


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the cleanup that leaves nothing behind still runs."""
    import signal

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def helper_main(argv: list[str] | None = None) -> NoReturn:
    """``git-remote-relay <remote> [<url>]``, run by git for ``relay::<url>``."""
    from .helper import Helper
    from .url import split_relay_address

    _exit_on_sigterm()

    args = sys.argv if argv is None else argv
    stdin, stdout, stderr = sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer
    # stdout belongs to git's protocol: anything that prints by mistake lands on stderr instead.
    sys.stdout = sys.stderr
    if len(args) < 2 or args[1] in ("-h", "--help"):
        stderr.write(
            b"usage: git-remote-relay <remote> [<url>]\n"
            b"git runs this for relay::<url> remotes, e.g. git clone relay::https://host/repo.git\n"
        )
        sys.exit(129 if len(args) < 2 else 0)
    if args[1] == "--version":
        from . import __version__

        stderr.write(f"git-remote-relay {__version__}\n".encode())
        sys.exit(0)
    trace = os.environ.get("GIT_RELAY_TRACE", "") not in ("", "0", "false")
    try:
        address = split_relay_address(args[1], args[2] if len(args) > 2 else None)
        helper = Helper(args[1], address, os.environ, stdin, stdout, stderr)
        try:
            code = helper.run()
        finally:
            helper.close()
    except RelayError as exc:
        _fatal(stderr, exc.message, exc.hint)
        code = 128
    except BrokenPipeError:
        code = 128  # git went away; nobody is left to read a message on stdout
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:
        _fatal(stderr, *_os_failure(exc))
        code = 128
    except Exception as exc:  # noqa: BLE001 - the boundary: report, never leak a traceback by default
        if trace:
            import traceback

            traceback.print_exc()
        _fatal(
            stderr,
            f"internal error in git-remote-relay: {type(exc).__name__}: {exc}",
            "run again with GIT_RELAY_TRACE=1 and report the output",
        )
        code = 128
    sys.stdout.flush()
    sys.exit(code)


RELAY_EXIT_CODES = """exit codes:
  0  done (or nothing to do)          3  blocked: refs need --force-with-lease/--prune; nothing pushed
  1  the target rejected some refs    128  fatal error (network, protocol, bad URL); nothing half-done
  2  usage error"""


def _relay_parser() -> "argparse.ArgumentParser":
    import argparse

    top = argparse.ArgumentParser(
        prog="git relay",
        description="Relay refs from one remote repository to another with no local clone: the source's pack is streamed into the target.",
        epilog=RELAY_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="{sync,plan,bootstrap,probe}")

    def selection(p: argparse.ArgumentParser, fleet: bool = False) -> None:
        if fleet:
            p.add_argument("source", nargs="?", help="source URL (anything git accepts; relay:: prefix optional)")
            p.add_argument("target", nargs="?", help="target URL")
            p.add_argument("--manifest", metavar="FILE", help="relay every pair a TOML manifest lists (see README)")
            p.add_argument("--jobs", type=int, metavar="N", help="with --manifest: pairs at once (default: 2 per CPU, at most 8)")
            p.add_argument("--per-host", type=int, default=4, metavar="N", help="with --manifest: at most N pairs per host at once")
            p.add_argument("--shard", metavar="K/N", help="with --manifest: only shard K (from 0) of N, by a stable hash of each pair")
        else:
            p.add_argument("source", help="source URL (anything git accepts; relay:: prefix optional)")
            p.add_argument("target", help="target URL")
        p.add_argument("--branch", action="append", default=[], metavar="NAME", help="only this branch (repeatable, or comma-separated)")
        p.add_argument(
            "--map", action="append", default=[], metavar="SRC:DST", help="relay SRC to DST (repeatable; short names are branches)"
        )
        p.add_argument("--tags", action="store_true", help="also relay tags")
        p.add_argument("--all-refs", action="store_true", help="relay every ref under refs/")
        p.add_argument("--exclude", action="append", default=[], metavar="PREFIX", help="leave refs starting with PREFIX alone")
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
        p.add_argument(
            "-v", "--verbose", action="count", default=0, help="also print transfer statistics; twice: trace what the relay does"
        )
        p.add_argument("--max-pack-bytes", metavar="N", help="abort when the relayed pack grows past N bytes (k/m/g suffixes)")
        p.add_argument("--no-lfs", dest="lfs", action="store_false",
                       help="do not copy Git LFS objects (by default those the relayed commits name go first)")
        p.add_argument("--lfs-history", action="store_true",
                       help="look for LFS pointers in every blob that moves, even when the tips show no LFS "
                            "(a repository that dropped LFS at its tips but has LFS files in older commits)")
        p.add_argument("--source-lfs-url", metavar="URL", help="the source's LFS API, where git-lfs would not find it from the URL")
        p.add_argument("--target-lfs-url", metavar="URL", help="the target's LFS API, where git-lfs would not find it from the URL")

    for name, text in (
        ("sync", "bring the target's managed refs to the source's"),
        ("plan", "show what sync would do, and why, without pushing"),
        ("bootstrap", "seed an empty target (refuses when a managed target ref exists)"),
    ):
        p = sub.add_parser(name, help=text, description=text, epilog=RELAY_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
        selection(p, fleet=name == "sync")
        if name != "bootstrap":
            p.add_argument(
                "--force-with-lease",
                action="store_true",
                help="overwrite diverged branches and moved tags; refused if the target moved meanwhile",
            )
            p.add_argument("--prune", action="store_true", help="delete managed target refs that are gone from the source")
        if name != "plan":
            p.add_argument("--atomic", action="store_true", help="all ref updates succeed or none (the target must support it)")
            p.add_argument("--spool", action="store_true",
                           help="write the source's pack to a temporary file first, so a slow source cannot stall the target")
    p = sub.add_parser("probe", help="show a remote's refs, capabilities, protocol version and object format")
    p.add_argument("url")
    p.add_argument("--push", action="store_true", help="also show the receive-pack capabilities")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0, help="twice: trace what the relay does")
    return top


def _short(oid: str) -> str:
    return oid[:10] if oid and oid != "0" * 40 else "-"


def _print_plan(record: dict[str, Any], reporter: "Reporter") -> None:
    reporter.out(f"{record['source']} -> {record['target']}  (mode: {record['mode']})")
    for ref in record["refs"]:
        arrow = f"{_short(ref['old'])}..{_short(ref['new'])}"
        name = ref["dst"] if not ref["src"] or ref["src"] == ref["dst"] else f"{ref['src']} -> {ref['dst']}"
        result = f" [{ref['result']}]" if ref["result"] != "planned" else ""
        reporter.out(f"  {ref['action']:<10} {arrow:<22} {name}: {ref['reason']}{result}")
    lfs = record.get("lfs")
    if lfs and lfs["objects"]:
        from .stats import human

        line = (f"  LFS: {lfs['objects']} object(s), {human(lfs['bytes'])} named; the target lacks {lfs['missing_on_target']} "
                f"({human(lfs['missing_bytes'])})")
        reporter.out(line + (f"; copied {lfs['copied']} ({human(lfs['copied_bytes'])})" if record["status"] != "planned" else ""))


def _fleet(args: Any, env: dict[str, str], stderr: BinaryIO) -> int:
    """``git relay sync --manifest``: exit 0 all pairs done, 1 some failed, 2 a bad manifest."""
    from .fleet import ManifestError, default_jobs, load_manifest, run_fleet, shard

    try:
        if not args.manifest:
            raise ManifestError("--jobs and --shard need --manifest FILE")
        if args.source or args.target:
            raise ManifestError("give either SOURCE TARGET or --manifest FILE, not both")
        single = (args.branch or args.map or args.tags or args.all_refs or args.exclude or args.max_pack_bytes or args.force_with_lease
                  or args.prune or args.source_lfs_url or args.target_lfs_url)
        if single:
            raise ManifestError("with --manifest, pair options go in the manifest ([defaults] or each [[pair]]); "
                                "only --atomic, --spool, --no-lfs and --lfs-history apply to every pair from the command line")
        pairs = load_manifest(args.manifest)
        for pair in pairs:  # the command line's word over the manifest's, for every pair
            pair.options.update({k: v for k, v in (("atomic", args.atomic), ("spool", args.spool), ("lfs_history", args.lfs_history)) if v})
            if not args.lfs:
                pair.options["lfs"] = False
        if args.shard:
            pairs = shard(pairs, args.shard)
    except ManifestError as exc:
        _fatal(stderr, exc.message, exc.hint)
        return 2
    jobs = args.jobs if args.jobs and args.jobs > 0 else default_jobs()
    return run_fleet(pairs, env, jobs, max(1, args.per_host), sys.stdout.buffer, stderr, quiet=args.quiet)


def _relay_command(args: "argparse.Namespace", env: dict[str, str], reporter: "Reporter", stderr: "BinaryIO") -> "dict[str, Any]":
    """Run ``git relay``'s command; the sync record (probe and fleets exit here themselves)."""
    import json

    from .gitcmd import Git
    from .settings import Settings, size_value
    from .sync import Selection, endpoint, probe, run_sync

    config = Git({k: v for k, v in env.items() if k != "GIT_DIR"}).config()
    settings = Settings(env, config)
    if args.command == "probe":
        info = probe(endpoint(args.url, env, config, settings, reporter), args.push)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"url: {info['url']}\nprotocol: v{info['protocol']}\nobject format: {info['object_format']}\nHEAD: {info['head']}")
            print("capabilities: " + " ".join(info["capabilities"]))
            print(f"size limit learned from pushes: {info['size_limit']}")
            print(f"LFS objects (git relay): {info['lfs']}")
            if "push_capabilities" in info:
                pc = info["push_capabilities"]
                print("push capabilities: " + (" ".join(pc) if isinstance(pc, list) else pc))
            print(f"refs: {len(info['refs'])}")
            for name, oid in info["refs"].items():
                print(f"  {oid} {name}")
        sys.exit(0)
    if getattr(args, "manifest", None) or getattr(args, "shard", None) or getattr(args, "jobs", None):
        sys.exit(_fleet(args, env, stderr))
    if not args.source or not args.target:
        _fatal(stderr, f"git relay {args.command} needs a SOURCE and a TARGET (or --manifest FILE)",
               f"git relay {args.command} SOURCE TARGET; see git relay {args.command} --help")
        sys.exit(2)  # a usage error, as the exit-code table says
    branches = [b for spec in args.branch for b in spec.split(",") if b]
    selection = Selection(branches=branches, maps=args.map, tags=args.tags, all_refs=args.all_refs, excludes=args.exclude)
    limit: int | None
    if args.max_pack_bytes:
        limit, limit_name = size_value(args.max_pack_bytes, "--max-pack-bytes"), "--max-pack-bytes"
    else:  # the helper's settings hold for git relay too
        limit, limit_name = settings.max_pack_bytes, "relay.maxPackBytes"
    source = endpoint(args.source, env, config, settings, reporter)
    target = endpoint(args.target, env, config, settings, reporter)
    if source.url.redacted.rstrip("/") == target.url.redacted.rstrip("/"):
        raise RelayError("source and target are the same repository")
    record = run_sync(
        source,
        target,
        selection,
        force_with_lease=getattr(args, "force_with_lease", False),
        prune=getattr(args, "prune", False),
        atomic=getattr(args, "atomic", False),
        limit=limit,
        dry_run=args.command == "plan",
        bootstrap_only=args.command == "bootstrap",
        split_interval=settings.split_interval,
        reporter=reporter,
        spool=getattr(args, "spool", False) or settings.spool,
        lfs=args.lfs and settings.lfs,
        lfs_history=args.lfs_history or settings.lfs_history,
        lfs_urls=(args.source_lfs_url, args.target_lfs_url),
        max_push=settings.max_push_bytes,
        limit_name=limit_name,
    )
    return record


def relay_main(argv: list[str] | None = None) -> NoReturn:
    """``git relay sync|plan|bootstrap|probe``."""
    import json

    from .ui import Reporter

    args = _relay_parser().parse_args(sys.argv[1:] if argv is None else argv)
    _exit_on_sigterm()
    stderr = sys.stderr.buffer
    env = dict(os.environ)
    verbose = getattr(args, "verbose", 0)
    quiet = getattr(args, "quiet", False)
    trace = verbose >= 2 or env.get("GIT_RELAY_TRACE", "") not in ("", "0", "false")
    reporter = Reporter(
        stderr, verbosity=0 if quiet else 1 + min(verbose, 1), progress=not quiet and stderr.isatty(), trace=trace, term=env.get("TERM")
    )
    try:
        record = _relay_command(args, env, reporter, stderr)
    except RelayError as exc:
        _fatal(stderr, exc.message, exc.hint)
        sys.exit(128)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        _fatal(stderr, *_os_failure(exc))
        sys.exit(128)
    except Exception as exc:  # noqa: BLE001 - the boundary: exit 128 with a message, never 1 ("refused") or a traceback
        if trace:
            import traceback

            traceback.print_exc()
        _fatal(stderr, f"internal error in git relay: {type(exc).__name__}: {exc}",
               "run again with GIT_RELAY_TRACE=1 and report the output")
        sys.exit(128)
    if args.json:
        print(json.dumps(record, indent=2))
    elif not args.quiet or record["status"] != "ok":
        _print_plan(record, reporter)
    if record["bytes"]:
        from .stats import human

        objects = record["objects"] if record["objects"] is not None else "?"
        reporter.info(
            f"relay: {objects} objects, {human(record['bytes'])} in {record['elapsed']:.1f}s; "
            f"peak RSS {human(record['peak_rss'])} relay, {human(record['peak_rss_children'])} largest child"
        )
    if record["status"] == "blocked":
        _fatal(
            stderr, "blocked ref updates; nothing was pushed", "use --force-with-lease to overwrite, --prune to delete, or plan to see why"
        )
        sys.exit(3)
    sys.exit(1 if record["status"] == "failed" else 0)
