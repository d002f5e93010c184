"""The ``essence`` command line.

    essence list                                   the nine methods, their papers and status
    essence reproduce <method>|all [--preset P]    run the small-scale reproduction(s) and write reports
    essence index DIR [--preset P]                 the index of the reports already under DIR (latest per method)
    essence <method> <command> ...                 a method's own commands (train, evaluate, ...)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from essence.core.cli import ArgumentParser, add_run_args, run_cli
from essence.core.progress import console, format_table_markdown, print_table
from essence.core.registry import suggest
from essence.core.report import Report
from essence.core.runs import Run, default_runs_root
from essence.methods import METHODS, MethodInfo, get_method, import_method

__all__ = ["main", "reproduce_method", "collect_reports", "IndexEntry"]


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


@dataclass
class IndexEntry:
    """One method's row of index.md and its claims ((verdict, claim, evidence) triples)."""

    title: str
    verdict: str
    counts: str = ""
    wall: str = "-"
    link: str = "-"
    precision: str = "-"
    claims: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def from_report(cls, info: MethodInfo, report: Report | None, error: str, root: Path) -> IndexEntry:
        if report is None:
            return cls(info.title, "error", error.replace("|", "/"))
        rel = report.run.dir.resolve().relative_to(root.resolve()) / "report.md"
        counts = ", ".join(f"{n} {v}" for v, n in sorted(report.counts.items()))
        end = report.finished if report.finished is not None else time.time()
        return cls(info.title, report.verdict, counts or "no claims", f"{end - report.started:.0f} s",
                   f"[report]({rel.as_posix()})", report.run.precision or report.precision or "-",
                   tuple((c.verdict, c.claim, c.evidence) for c in report.claims))

    @classmethod
    def from_summary(cls, title: str, summary: dict, report_md: Path, root: Path) -> IndexEntry:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(summary.get("verdict_counts", {}).items()))
        rel = report_md.resolve().relative_to(root.resolve())
        seconds = summary.get("seconds")
        return cls(title, summary.get("verdict", "?"), counts or "no claims",
                   f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-", f"[report]({rel.as_posix()})",
                   summary.get("precision") or "-",
                   tuple((c.get("verdict", "?"), c.get("claim", ""), c.get("evidence", ""))
                         for c in summary.get("claims", [])))


def _write_index(root: Path, entries: list[IndexEntry], preset: str, command: str = "",
                 machine: str = "") -> Path:
    """index.md: one row per method (verdict counts, wall time, precision, report link), then every claim with
    its estimate and 95% interval. For the standard preset this page is what docs/results.md publishes."""
    from essence.core.precision import machine_line

    lines = [f"# essence: reproduction index ({preset} preset)", "",
             f"- **Date:** {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"- **Machine:** {machine or machine_line(precision='auto')}",
             f"- **Command:** `{command or f'essence reproduce all --preset {preset}'}`",
             f"- **Commit:** {_git_commit()}", ""]
    rows = [(e.title, e.verdict, e.counts, e.wall, e.precision, e.link) for e in entries]
    lines += [format_table_markdown(["method", "verdict", "claims", "wall time", "precision", "report"], rows), "",
              "## Claims", ""]
    for e in entries:
        if not e.claims:
            continue
        lines.append(f"### {e.title}")
        lines += [f"- **{verdict}**: {claim} ({evidence})" for verdict, claim, evidence in e.claims]
        lines.append("")
    path = root / "index.md"
    path.write_text("\n".join(lines))
    return path


def collect_reports(root: Path, preset: str | None = None) -> list[IndexEntry]:
    """The latest finished report (``summary.json`` beside ``report.md``) of each method under ``root``, in the
    registry's order; ``preset`` keeps only runs of that preset."""
    latest: dict[str, tuple[float, dict, Path]] = {}
    for summary_path in root.rglob("summary.json"):
        report_md = summary_path.with_name("report.md")
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue
        method = str(summary.get("method", "")).replace("_", "-")
        if method not in METHODS or not report_md.exists() or "claims" not in summary:
            continue
        if preset is not None and summary.get("preset") != preset:
            continue
        mtime = report_md.stat().st_mtime
        if method not in latest or mtime > latest[method][0]:
            latest[method] = (mtime, summary, report_md)
    return [IndexEntry.from_summary(METHODS.get(n).title, latest[n][1], latest[n][2], root)
            for n in METHODS if n in latest]


def _cmd_index(args) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory of runs")
    entries = collect_reports(root, args.preset)
    if not entries:
        raise ValueError(f"{root}: no finished reproduction (summary.json + report.md)"
                         + (f" of the {args.preset} preset" if args.preset else "") + " under it")
    missing = [METHODS.get(n).title for n in METHODS
               if METHODS.get(n).implemented and METHODS.get(n).title not in {e.title for e in entries}]
    index = _write_index(root, entries, args.preset or "mixed",
                         command="essence " + " ".join(["index", *sys.argv[2:]]),
                         machine="as recorded in each report (runs collected from separate invocations)")
    print_table(["method", "verdict", "wall time"], [(e.title, e.verdict, e.wall) for e in entries],
                title="reports")
    if missing:
        console.print("no report for: " + ", ".join(missing))
    console.print(f"index: {index}")
    return 0


def _cmd_reproduce(args) -> int:
    if args.method != "all":
        info = get_method(args.method)
        reproduce_method(info.cli_name, preset=args.preset, out=args.out, device=args.device,
                         overrides=args.overrides)
        return 0
    root = Path(args.out) if args.out else default_runs_root()
    root.mkdir(parents=True, exist_ok=True)
    entries: list[IndexEntry] = []
    todo = [METHODS.get(n) for n in METHODS if METHODS.get(n).implemented]
    skipped = [METHODS.get(n).title for n in METHODS if not METHODS.get(n).implemented]
    if args.overrides:
        raise ValueError("--set applies to one method; use `essence reproduce <method> --set ...`")
    for info in todo:
        try:
            report = reproduce_method(info.cli_name, preset=args.preset, out=root, device=args.device)
            entries.append(IndexEntry.from_report(info, report, "", root))
        except Exception as err:  # one failing method must not hide the others' reports
            console.print(f"[red]{info.title} failed:[/] {type(err).__name__}: {err}")
            entries.append(IndexEntry.from_report(info, None, f"{type(err).__name__}: {err}", root))
    index = _write_index(root, entries, args.preset, command="essence " + " ".join(sys.argv[1:]))
    print_table(["method", "verdict"], [(e.title, e.verdict) for e in entries], title="reproductions")
    if skipped:
        console.print("not implemented yet: " + ", ".join(skipped))
    console.print(f"index: {index}")
    failed = [e.title for e in entries if e.verdict == "error"]
    return 1 if failed else 0


def _top_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="essence", description=__doc__.split("\n\n")[0],
                            epilog="methods: " + ", ".join(METHODS))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.add_parser("list", help="list the nine methods and their status")
    rep = sub.add_parser("reproduce", help="run small-scale reproductions and write reports")
    rep.add_argument("method", help="a method name, or 'all'")
    add_run_args(rep)
    idx = sub.add_parser("index", help="write DIR/index.md from the reports already under DIR (latest per method)")
    idx.add_argument("dir", help="a directory of runs (searched recursively for report.md + summary.json)")
    idx.add_argument("--preset", default=None, choices=["tiny", "quick", "standard", "paper"],
                     help="only runs of this preset (default: any)")
    for name in METHODS:
        sub.add_parser(name, help=f"{METHODS.get(name).title} commands", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from essence.core.runtime import tune_allocator

    argv = list(sys.argv[1:] if argv is None else argv)
    tune_allocator()

    def run() -> int:
        if argv and argv[0] in METHODS:
            info = METHODS.get(argv[0])
            if not info.implemented:
                console.print(f"{info.title} (essence {info.cli_name}) is not implemented yet.")
                return 2
            return int(import_method(info.cli_name, "cli").main(argv[1:]) or 0)
        if argv and not argv[0].startswith("-") and argv[0] not in {"list", "reproduce", "index"}:
            choices = ["list", "reproduce", "index", *METHODS]
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
        if args.command == "index":
            return _cmd_index(args)
        if args.method != "all" and args.method.replace("_", "-") not in METHODS:
            get_method(args.method)  # raises with a suggestion
        return _cmd_reproduce(args)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
