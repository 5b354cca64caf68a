"""The reproduction report: one section per article, written as report.md + results.json."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from kexue.io import write_text
from kexue.provenance import describe_machine, machine_facts
from kexue.results import Figure, write_results


@dataclass
class SectionResult:
    """What one article's section produced.

    Attributes:
        name: short key, e.g. ``"vae"``.
        title: heading, e.g. ``"1. Clustering VAE (kexue.fm/archives/5887)"``.
        figures: measured numbers beside the published ones.
        notes: markdown shown under the table (setting, what falls short and by how much).
        images: PNG paths relative to the report folder.
        seconds: wall time of the section.
        headline: keys (fnmatch patterns allowed) of the few figures that go into the summary table at
            the top of the report (and the README); empty means every figure with a published number.
    """

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: str = ""
    images: list[str] = field(default_factory=list)
    seconds: float = 0.0
    headline: list[str] = field(default_factory=list)

    def headline_figures(self) -> list[Figure]:
        if not self.headline:
            return [f for f in self.figures if f.published is not None]
        return [f for f in self.figures if any(fnmatch(f.key, pat) for pat in self.headline)]


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.3e}"


def figure_table(figures: list[Figure]) -> str:
    """Markdown table (metric | ours | published | source | command) and the commands below it.

    A command shared by many rows is printed once under the table and referred to by number.
    """
    commands = list(dict.fromkeys(f.command for f in figures if f.command))
    rows = ["| metric | ours | published | source | command |", "|---|---|---|---|---|"]
    for f in figures:
        ref = f"[{commands.index(f.command) + 1}]" if f.command else ""
        rows.append(f"| {f.key} | {_fmt(f.value)} | {_fmt(f.published)} | {f.source or ''} | {ref} |")
    if commands:
        rows.append("")
        rows += [f"[{i}] `{c}`  " for i, c in enumerate(commands, 1)]
    return "\n".join(rows)


def summary_table(sections: list[SectionResult]) -> str:
    """The headline figures of every section in one table (the README's results table)."""
    rows = ["| article | metric | ours | published |", "|---|---|---|---|"]
    for s in sections:
        article = s.title.split(" (")[0]
        for f in s.headline_figures():
            rows.append(f"| {article} | {f.key} | {_fmt(f.value)} | {_fmt(f.published)} |")
    return "\n".join(rows)


def write_report(out: Path, sections: list[SectionResult], mode: str, machine: dict | None = None) -> Path:
    """Write ``out/report.md`` and ``out/results.json`` (atomically) from finished sections.

    ``machine``: the :func:`kexue.provenance.machine_facts` measured when the run started
    (measured now when not given); the report prints them under its title.
    """
    machine = machine or machine_facts()
    parts = [
        "# kexue reproduction report",
        "",
        (
            f"Mode: `{mode}`. Written {time.strftime('%Y-%m-%d %H:%M:%S')}. "
            "Each row puts our measured figure beside the published one; see each section's notes "
            "for the setting and for what falls short."
        ),
        "",
        f"Machine (measured at the start): {describe_machine(machine)}; Python {machine.get('python', '?')}.",
        "",
        "## Summary",
        "",
        summary_table(sections),
        "",
    ]
    for s in sections:
        parts += [f"## {s.title}", "", f"Wall time: {s.seconds:.0f} s.", "", figure_table(s.figures), ""]
        if s.notes:
            parts += [s.notes.strip(), ""]
        parts += [f"![{Path(img).stem}]({img})" for img in s.images]
        parts.append("")
    write_results(out / "results.json", [f for s in sections for f in s.figures])
    return write_text(out / "report.md", "\n".join(parts))
