"""The ``essence`` command line.

    essence list                                   the nine methods, their papers and status
    essence reproduce <method>|all [--preset P]    run the small-scale reproduction(s) and write reports
    essence <method> <command> ...                 a method's own commands (train, evaluate, ...)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from essence.core.cli import ArgumentParser, add_run_args, run_cli
from essence.core.progress import console, format_table_markdown, print_table
from essence.core.registry import suggest
from essence.core.report import Report
from essence.core.runs import Run, default_runs_root
from essence.methods import METHODS, MethodInfo, get_method, import_method

__all__ = ["main", "reproduce_method"]


def reproduce_method(name: str, *, preset: str = "quick", out: str | Path | None = None, exact: bool = False,
                     device: str = "auto", overrides: Sequence[str] = ()) -> Report:
    """Run ``essence.<method>.reproduce.reproduce`` in a fresh run directory and return its written Report."""
    info = get_method(name)
    module = import_method(info.cli_name, "reproduce")
    run = Run.create(info.cli_name, preset, out, exact=exact)
    console.print(f"[bold]{info.title}[/]: reproducing ({preset} preset) in {run.dir}")
    report = module.reproduce(run, preset=preset, device=device, overrides=tuple(overrides))
    path = report.write()
    console.print(f"[bold]{info.title}[/]: {report.verdict} -> {path}")
    return report


def _cmd_list() -> int:
    rows = [(m.cli_name, m.title, m.status, m.cite) for m in (METHODS.get(n) for n in METHODS)]
    print_table(["method", "title", "status", "paper"], rows, title="essence: nine 2019 papers")
    return 0


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        if out.returncode == 0:
            return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown (not a git checkout)"


def _write_index(root: Path, entries: list[tuple[MethodInfo, Report | None, str]], preset: str,
                 command: str = "") -> Path:
    """index.md: one row per method (verdict counts, wall time, report link), then every claim with its
    estimate and 95% interval. For the standard preset this page is what docs/results.md publishes."""
    from essence.core.precision import machine_line

    lines = [f"# essence: reproduction index ({preset} preset)", "",
             f"- **Date:** {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"- **Machine:** {machine_line(precision='auto')}",
             f"- **Command:** `{command or f'essence reproduce all --preset {preset}'}`",
             f"- **Commit:** {_git_commit()}", ""]
    rows = []
    for info, report, error in entries:
        if report is None:
            rows.append((info.title, "error", error.replace("|", "/"), "-", "-"))
            continue
        rel = report.run.dir.resolve().relative_to(root.resolve()) / "report.md"
        counts = ", ".join(f"{n} {v}" for v, n in sorted(report.counts.items()))
        rows.append((info.title, report.verdict, counts or "no claims", f"{time.time() - report.started:.0f} s"
                     if report.finished is None else f"{report.finished - report.started:.0f} s",
                     f"[report]({rel.as_posix()})"))
    lines += [format_table_markdown(["method", "verdict", "claims", "wall time", "report"], rows), "",
              "## Claims", ""]
    for info, report, _ in entries:
        if report is None:
            continue
        lines.append(f"### {info.title}")
        lines += [f"- **{c.verdict}**: {c.claim} ({c.evidence})" for c in report.claims]
        lines.append("")
    path = root / "index.md"
    path.write_text("\n".join(lines))
    return path


def _cmd_reproduce(args) -> int:
    if args.method != "all":
        info = get_method(args.method)
        reproduce_method(info.cli_name, preset=args.preset, out=args.out, device=args.device,
                         overrides=args.overrides)
        return 0
    root = Path(args.out) if args.out else default_runs_root()
    root.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[MethodInfo, Report | None, str]] = []
    todo = [METHODS.get(n) for n in METHODS if METHODS.get(n).implemented]
    skipped = [METHODS.get(n).title for n in METHODS if not METHODS.get(n).implemented]
    if args.overrides:
        raise ValueError("--set applies to one method; use `essence reproduce <method> --set ...`")
    for info in todo:
        try:
            report = reproduce_method(info.cli_name, preset=args.preset, out=root, device=args.device)
            entries.append((info, report, ""))
        except Exception as err:  # one failing method must not hide the others' reports
            console.print(f"[red]{info.title} failed:[/] {type(err).__name__}: {err}")
            entries.append((info, None, f"{type(err).__name__}: {err}"))
    index = _write_index(root, entries, args.preset, command="essence " + " ".join(sys.argv[1:]))
    print_table(["method", "verdict"], [(i.title, r.verdict if r else "error") for i, r, _ in entries],
                title="reproductions")
    if skipped:
        console.print("not implemented yet: " + ", ".join(skipped))
    console.print(f"index: {index}")
    failed = [i.title for i, r, _ in entries if r is None]
    return 1 if failed else 0


def _top_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="essence", description=__doc__.split("\n\n")[0],
                            epilog="methods: " + ", ".join(METHODS))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.add_parser("list", help="list the nine methods and their status")
    rep = sub.add_parser("reproduce", help="run small-scale reproductions and write reports")
    rep.add_argument("method", help="a method name, or 'all'")
    add_run_args(rep)
    for name in METHODS:
        sub.add_parser(name, help=f"{METHODS.get(name).title} commands", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        if argv and argv[0] in METHODS:
            info = METHODS.get(argv[0])
            if not info.implemented:
                console.print(f"{info.title} (essence {info.cli_name}) is not implemented yet.")
                return 2
            return int(import_method(info.cli_name, "cli").main(argv[1:]) or 0)
        if argv and not argv[0].startswith("-") and argv[0] not in {"list", "reproduce"}:
            choices = ["list", "reproduce", *METHODS]
            console.print(f"[red]error:[/] unknown command {argv[0]!r}{suggest(argv[0], choices)}; "
                          f"valid: {', '.join(choices)}", highlight=False)
            return 2
        parser = _top_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "list":
            return _cmd_list()
        if args.method != "all" and args.method.replace("_", "-") not in METHODS:
            get_method(args.method)  # raises with a suggestion
        return _cmd_reproduce(args)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
