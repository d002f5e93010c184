"""Progress bars and tables, both drawn with ``rich`` (one library for all terminal output).

Bars show count, rate and ETA; they are hidden on non-main processes and when ``ESSENCE_PROGRESS=0``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from essence.core.distributed import is_main

__all__ = ["progress", "ProgressBar", "print_table", "console", "format_table_markdown"]

T = TypeVar("T")
console = Console(stderr=True)


def _enabled(disable: bool | None) -> bool:
    if disable is not None:
        return not disable
    return is_main() and os.environ.get("ESSENCE_PROGRESS", "1") != "0"


class _RateColumn(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class ProgressBar:
    """A bar with count, rate and ETA, plus an optional live postfix (``loss=0.31``).

    >>> with ProgressBar(total=1000, desc="train") as bar:
    ...     for step in range(1000):
    ...         bar.update(1, loss=0.5)
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", disable: bool | None = None):
        self.enabled = _enabled(disable)
        self.total = total
        self._postfix = ""
        self._progress: Progress | None = None
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), _RateColumn(unit), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                console=console, transient=False,
            )
            self._task = self._progress.add_task(desc, total=total, postfix="")

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._progress is None:
            return
        if postfix:
            self._postfix = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items()
            )
        self._progress.update(self._task, advance=n, postfix=self._postfix)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool | None = None) -> Iterator[T]:
    """Wrap an iterable in a :class:`ProgressBar`."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with ProgressBar(total=total, desc=desc, unit=unit, disable=disable) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Print a table to the terminal (main process only)."""
    if not is_main():
        return
    table = Table(title=title, show_lines=False)
    for h in headers:
        table.add_column(str(h), overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row))
    Console(width=max(Console().width, 120)).print(table)


def format_table_markdown(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)
