"""Reproduction reports: ``report.md`` with PNG figures and ``summary.json``.

Every ``essence <method> reproduce`` builds one :class:`Report`: the paper's claims, the numbers measured here
beside the paper's, figures, and a plain verdict per claim. A claim that does not reproduce is reported as such.

    report = Report(run, title="MoCo", paper="He et al., CVPR 2020", preset="quick")
    report.text("What was scaled down: ...")
    report.table(["K", "kNN top-1"], rows)
    report.figure(fig, "acc_vs_k", "kNN accuracy vs queue size")
    report.claim("Accuracy rises with K", verdict=REPRODUCED, evidence="K=256: 71.2%, K=4096: 74.0%")
    report.write()
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from essence.core.progress import format_table_markdown
from essence.core.runs import Run

__all__ = ["Report", "Claim", "REPRODUCED", "NOT_REPRODUCED", "PARTLY", "INCONCLUSIVE", "VERDICTS",
           "save_figure"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
PARTLY = "partly"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, PARTLY)


@dataclass
class Claim:
    claim: str          # the paper's claim, in one sentence
    verdict: str        # reproduced / not reproduced / inconclusive (partly: only for a preview without stats)
    evidence: str       # the measured numbers that decide it: estimate, 95% CI, n, test (and the paper's numbers)
    reason: str = ""    # why, when it is not a plain yes
    decisions: list[dict[str, Any]] = field(default_factory=list)  # the statistics behind the verdict


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


class Report:
    """Accumulates markdown blocks, figures and claims; :meth:`write` produces report.md + summary.json."""

    def __init__(self, run: Run, *, title: str, paper: str, preset: str, method: str | None = None):
        self.run = run
        self.title = title
        self.paper = paper
        self.preset = preset
        self.method = method or run.method
        self.blocks: list[str] = []
        self.claims: list[Claim] = []
        self.summary: dict[str, Any] = {}
        self.started = time.time()
        self.finished: float | None = None  # set by write()
        self.precision: str | None = None  # one line; set by the method when the run has no recorded precision

    # -- content -----------------------------------------------------------------------------------------
    def section(self, title: str) -> None:
        self.blocks.append(f"## {title}")

    def text(self, markdown: str) -> None:
        self.blocks.append(markdown.strip())

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> None:
        block = format_table_markdown(headers, list(rows))
        self.blocks.append(f"{block}\n\n*{caption}*" if caption else block)

    def figure(self, fig: Any, name: str, caption: str = "") -> Path:
        path = save_figure(fig, self.run.figures_dir / f"{name}.png")
        self.blocks.append(f"![{caption or name}](figures/{path.name})" + (f"\n\n*{caption}*" if caption else ""))
        return path

    def claim(self, claim: str, *, decision: Any = None, verdict: str | None = None, evidence: str = "",
              reason: str = "", name: str = "effect", digits: int = 3, scale: float = 1.0) -> Claim:
        """Record one claim of the paper and its verdict.

        ``decision``: an :class:`essence.core.stats.Decision` (or a list of them for a claim made of several
        comparisons, joined by :func:`essence.core.stats.combine`); the verdict then comes from the statistics
        and the estimate, its 95% interval, n and the test are added to the evidence. A bare ``verdict``
        without a decision is only for claims that are not comparisons (a preview, an error).
        """
        from essence.core.stats import Decision, combine

        decisions = [] if decision is None else list(decision) if isinstance(decision, (list, tuple)) else [decision]
        if decisions:
            if not all(isinstance(d, Decision) for d in decisions):
                raise TypeError("decision must be an essence.core.stats.Decision or a list of them")
            verdict = verdict or combine(decisions)
            stats_text = "; ".join(d.describe(digits=digits, scale=scale, name=name) for d in decisions)
            evidence = f"{evidence}; {stats_text}" if evidence else stats_text
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        c = Claim(claim=claim, verdict=verdict, evidence=evidence, reason=reason,
                  decisions=[d.as_dict() for d in decisions])
        self.claims.append(c)
        return c

    def add_summary(self, **values: Any) -> None:
        self.summary.update(values)

    # -- output ------------------------------------------------------------------------------------------
    @property
    def verdict(self) -> str:
        """Overall: the common verdict when every claim has the same one, else partly."""
        verdicts = {c.verdict for c in self.claims}
        if not verdicts:
            return INCONCLUSIVE
        if len(verdicts) == 1:
            return verdicts.pop()
        return PARTLY

    @property
    def counts(self) -> dict[str, int]:
        """How many claims got each verdict."""
        out: dict[str, int] = {}
        for c in self.claims:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def markdown(self) -> str:
        from essence.core.precision import machine_line

        elapsed = (self.finished or time.time()) - self.started
        precision = self.run.precision or self.precision
        head = [
            f"# {self.title}: reproduction report",
            "",
            f"**Paper:** {self.paper}  ",
            f"**Preset:** `{self.preset}`  ",
            f"**Run directory:** `{self.run.dir}`  ",
            f"**Wall time:** {elapsed:.0f} s  ",
            f"**Machine:** {machine_line(precision='auto')}  ",
            *([f"**Precision:** {precision}  "] if precision else []),
            f"**Overall verdict:** {self.verdict}",
            "",
        ]
        if self.preset in ("tiny", "quick"):
            head += [f"> The `{self.preset}` preset previews the claims: its budget is minutes, so most comparisons "
                     f"are inconclusive by design. The `standard` preset decides them: "
                     f"`essence reproduce {self.method} --preset standard`.", ""]
        head += [
            "## Claims and verdicts",
            "",
        ]
        rows = [(i + 1, c.claim, f"**{c.verdict}**", c.evidence + (f" ({c.reason})" if c.reason else ""))
                for i, c in enumerate(self.claims)]
        head.append(format_table_markdown(["#", "claim (paper)", "verdict", "measured here"], rows))
        return "\n".join(head) + "\n\n" + "\n\n".join(self.blocks) + "\n"

    def write(self) -> Path:
        """Write report.md and summary.json into the run directory; return the report path."""
        path = self.run.dir / "report.md"
        self.finished = time.time()
        path.write_text(self.markdown())
        reserved = {
            "method": self.method,
            "title": self.title,
            "paper": self.paper,
            "preset": self.preset,
            "verdict": self.verdict,
            "verdict_counts": self.counts,
            "claims": [asdict(c) for c in self.claims],
            "seconds": round((self.finished or time.time()) - self.started, 1),
            "precision": self.run.precision or self.precision,
        }
        clash = sorted(set(self.summary) & set(reserved))
        if clash:
            raise ValueError(f"add_summary keys {clash} are reserved for the report itself; use other names")
        summary = {**reserved, **self.summary}
        self.run.write_summary(summary)
        return path

    @staticmethod
    def load_summary(run_dir: str | Path) -> dict[str, Any]:
        return json.loads((Path(run_dir) / "summary.json").read_text())
