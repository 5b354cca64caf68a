"""Every measured figure quoted in README.md and docs/*.md is the one stored in benchmarks/results/.

The marker rule. A measured figure carries, right after it (only a unit, ``%``, ``×``, spaces or the
``**`` of bold in between), an HTML comment that GitHub does not render, naming where it is stored::

    32.9 %<!--fig nystrom.listops.acc_nystrom-->                  a row of a results file: its "value"
    76.9<!--fig vae.mnist5k.acc_hungarian ×100-->                 a fraction printed as a percentage
    0.093 s<!--fig nystrom_details.json:core.8192.lucidrains.fwd_s-->    a value inside any JSON file
    32 MiB<!--fig nystrom_details.json:core.8192.ours.fwd_bytes /MiB-->  bytes printed in MiB (/KiB, /GiB)

- ``KEY``: a row of the results files that ``--results`` merges into, benchmarks/results/*.json
  (flat ``{key: {"value": ...}}``, the schema of :mod:`kexue.results`); a key found in two of them
  must name its file. Snapshots of other runs (``reproduce_*.json``, a subfolder such as
  ``nystrom_2threads/``) hold the same keys, so their figures always name the file.
- ``FILE.json:PATH``: a value inside a file under benchmarks/results/: the row ``PATH`` of a
  results file, or in a details file dict keys and list indices joined by dots (a key may itself
  hold dots, e.g. ``top_p:0.9``).
- ``.PATH``: relative to the ``<!--figbase PREFIX-->`` earlier on the same line, so that a table
  row names its base once (``| greedy<!--figbase termination.vanilla.greedy--> | 1.00<!--fig
  .nonterminating--> |``).
- an optional scale: ``×N`` (or ``xN``), ``/N``, ``/KiB``, ``/MiB``, ``/GiB``.

The printed figure must equal the stored value (times the scale) rounded to the printed digits:
within half a unit of its last printed digit. A marker whose key does not exist, a bare key that
two files hold, or a marker with no number before it fails the test.

Coverage. In README.md's "Results" section and in every docs section whose heading starts with
"What we measured", "Measured" or "Results" (subsections included; "What is measured", a page's
definitions of its keys, is not one), every number in a table body carries a marker, except in the
first column (the row's label), in label columns headed figure / metric / decoder / chain, and in
columns whose header says published / paper / target / met: those hold numbers from papers or the
author's posts (with their source beside them) or the project's own goals, never our measurements.
Numbers and markers inside `code` or a fenced block are shown as written (commands, settings,
examples) and are not checked. Figures that no committed file holds (a run folder that is not in
git, an exploratory probe) do not belong in these pages: rephrase them, or commit what writes them.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

NUMBER = r"(?<![\w.])(?P<num>[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?)"
GAP = r"(?P<gap>[ %×*]*(?:(?:s|ms|MiB|GiB|KiB|MB)(?![\w])[ *]*)?)"
MARKER = r"<!--fig\s+(?P<ref>[^\s>]+)(?:\s+(?P<scale>[^\s>]+))?\s*-->"
FIGURE = re.compile(NUMBER + GAP + MARKER)
ANY_MARKER = re.compile(r"<!--fig\s")
BASE = re.compile(r"<!--figbase\s+(?P<base>[^\s>]+)\s*-->")
FILE_REF = re.compile(r"(?P<file>[\w./-]+\.json):(?P<path>.+)")
UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}

RESULTS_HEADING = re.compile(r"^(what we measured|measured|results)\b", re.IGNORECASE)
LABEL_COLUMN = re.compile(r"^(figure|metric|decoder|chain)\b", re.IGNORECASE)
NOT_MEASURED_COLUMN = re.compile(r"published|paper|target|met\b", re.IGNORECASE)
# A digit that starts a number (not one inside a name such as mnist5k, n2048, top_p:0.9, seq_rep_4).
BARE_NUMBER = re.compile(r"(?<![\w.:/^])\d")


# ---- the stored figures ----------------------------------------------------------------------------


def _is_results_file(data: object) -> bool:
    return isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "value" in v for v in data.values())


@cache
def stored_files() -> dict[str, object]:
    """Every JSON file under benchmarks/results/, by its path relative to that folder."""
    return {
        p.relative_to(RESULTS).as_posix(): json.loads(p.read_text(encoding="utf-8")) for p in RESULTS.rglob("*.json")
    }


def _merged(name: str, data: object) -> bool:
    """A results file that bare keys resolve in: top level, not a snapshot of a report run."""
    return "/" not in name and not name.startswith("reproduce_") and _is_results_file(data)


def _walk(obj: object, parts: list[str]) -> object:
    """Follow dict keys (which may contain dots: the longest key that leads somewhere wins) and list indices."""
    if not parts:
        return obj
    if isinstance(obj, dict):
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in obj:
                try:
                    return _walk(obj[key], parts[i:])
                except KeyError:
                    continue
    if isinstance(obj, list) and parts[0].isdigit() and int(parts[0]) < len(obj):
        return _walk(obj[int(parts[0])], parts[1:])
    raise KeyError(".".join(parts))


def lookup(ref: str, files: dict[str, object]) -> float:
    """The stored value a marker names (see the module docstring); KeyError with the reason if none."""
    m = FILE_REF.fullmatch(ref)
    if m:
        if m["file"] not in files:
            raise KeyError(f"no file benchmarks/results/{m['file']}")
        data = files[m["file"]]
        if _is_results_file(data):
            if m["path"] not in data:
                raise KeyError(f"no key {m['path']!r} in {m['file']}")
            value = data[m["path"]]["value"]
        else:
            try:
                value = _walk(data, m["path"].split("."))
            except KeyError:
                raise KeyError(f"no path {m['path']!r} in {m['file']}") from None
    else:
        holders = [name for name, data in files.items() if _merged(name, data) and ref in data]
        if not holders:
            raise KeyError(f"no results key {ref!r} in benchmarks/results/*.json")
        if len(holders) > 1:
            raise KeyError(f"results key {ref!r} is in {', '.join(sorted(holders))}: name the file (FILE.json:KEY)")
        value = files[holders[0]][ref]["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KeyError(f"{ref!r} holds {value!r}, not a number")
    return float(value)


def _scale(text: str | None) -> float:
    if text is None:
        return 1.0
    m = re.fullmatch(r"([×x/])(KiB|MiB|GiB|\d+(?:\.\d+)?(?:e\d+)?)", text)
    if not m:
        raise ValueError(f"unknown scale {text!r} (×N, /N, /KiB, /MiB, /GiB)")
    factor = UNITS.get(m[2]) or float(m[2])
    return 1 / factor if m[1] == "/" else factor


def _printed(num: str) -> tuple[float, float]:
    """The printed number and half a unit of its last printed digit."""
    text = num.replace(",", "").replace("−", "-")
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return float(text), 0.5 * 10.0 ** (int(exponent or 0) - decimals)


# ---- reading the pages -----------------------------------------------------------------------------


def check_figures(text: str, files: dict[str, object]) -> list[str]:
    """One message per marker that fails: unknown key, wrong value, bad scale, or no number before it.

    Text in `code` and in fenced blocks is shown as it is written, so a marker there is not one.
    """
    problems = []
    in_fence = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", lambda code: " " * len(code[0]), line)
        bases = list(BASE.finditer(line))
        matched = 0
        for m in FIGURE.finditer(line):
            matched += 1
            ref = m["ref"]
            if ref.startswith("."):
                before = [b for b in bases if b.start() < m.start()]
                if not before:
                    problems.append(f"line {lineno}: {ref!r} is relative but no <!--figbase ...--> comes before it")
                    continue
                ref = before[-1]["base"] + ref
            try:
                stored = lookup(ref, files) * _scale(m["scale"])
            except (KeyError, ValueError) as e:
                problems.append(f"line {lineno}: {m['num']}: {e.args[0]}")
                continue
            printed, half_unit = _printed(m["num"])
            if not abs(printed - stored) <= half_unit * (1 + 1e-9) + 1e-12 or not math.isfinite(stored):
                problems.append(f"line {lineno}: printed {m['num']} but {ref} {m['scale'] or ''} is {stored:.6g}")
        orphans = len(ANY_MARKER.findall(line)) - matched
        if orphans:
            problems.append(f"line {lineno}: {orphans} <!--fig ...--> marker(s) with no number right before them")
    return problems


def _split_row(line: str) -> list[str]:
    """Cells of a markdown table row; a ``|`` inside `code` or escaped as ``\\|`` does not split."""
    cells, cell, in_code, i = [], "", False, 0
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            cell += body[i : i + 2]
            i += 2
            continue
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(cell)
            cell = ""
        else:
            cell += ch
        i += 1
    return [*cells, cell]


def results_tables(text: str):
    """(header cells, body rows as (line number, cells)) of every table in a results section."""
    inside, level, table = False, 0, []
    lines = text.splitlines()
    in_fence = False
    for lineno, line in enumerate([*lines, ""], 1):
        if line.startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else re.match(r"(#+)\s+(.*)", line)
        if heading:
            depth = len(heading[1])
            if inside and depth <= level:
                inside = False
            if not inside and RESULTS_HEADING.search(heading[2].strip("` ")):
                inside, level = True, depth
        if inside and not in_fence and line.lstrip().startswith("|"):
            table.append((lineno, line))
            continue
        if table:
            (_, header), *body = table
            rows = [(n, _split_row(row)) for n, row in body if not re.fullmatch(r"[\s|:-]+", row)]
            yield _split_row(header), rows
            table = []


def unmarked_numbers(text: str) -> list[str]:
    """Numbers in the measured columns of results tables that carry no marker (the coverage rule)."""
    problems = []
    for header, rows in results_tables(text):
        exempt = {0} | {
            i for i, h in enumerate(header) if LABEL_COLUMN.search(h.strip()) or NOT_MEASURED_COLUMN.search(h)
        }
        for lineno, cells in rows:
            for i, cell in enumerate(cells):
                if i in exempt:
                    continue
                rest = re.sub(r"`[^`]*`", "", cell)
                rest = FIGURE.sub("", rest)
                rest = re.sub(r"<!--.*?-->", "", rest)
                if BARE_NUMBER.search(rest):
                    column = header[i].strip() if i < len(header) else f"column {i + 1}"
                    problems.append(f"line {lineno} ({column!r}): {cell.strip()!r} has a number without a marker")
    return problems


# ---- the checks on the real pages ------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_marked_figure_matches_benchmarks_results(page):
    problems = check_figures(page.read_text(encoding="utf-8"), stored_files())
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_number_in_a_results_table_is_marked(page):
    problems = unmarked_numbers(page.read_text(encoding="utf-8"))
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_pages_quote_measured_figures():
    """The markers are in use: README's results and every article page point into benchmarks/results/."""
    counts = {p.name: len(FIGURE.findall(p.read_text(encoding="utf-8"))) for p in PAGES}
    assert counts["README.md"] >= 20
    for name in ("decoding.md", "nystrom.md", "onlstm.md", "repetition.md", "vae_cluster.md"):
        assert counts[name] >= 5, counts


# ---- the checker itself, on hand-made files --------------------------------------------------------

FILES = {
    "a.json": {
        "x.acc": {"value": 0.7694, "published": None, "source": None, "command": "kexue a"},
        "x.ppl": {"value": 196.23, "published": None, "source": None, "command": "kexue a"},
    },
    "b.json": {"x.ppl": {"value": 150.0, "published": None, "source": None, "command": "kexue b"}},
    "reproduce_quick.json": {"x.acc": {"value": 0.5, "published": None, "source": None, "command": "kexue r"}},
    "old/a.json": {"x.acc": {"value": 0.25, "published": None, "source": None, "command": "kexue a"}},
    "d.json": {
        "core": {"8192": {"ours": {"fwd_bytes": 33554432}}},
        "dec": {"top_p:0.9": {"R": 0.1147}},
        "mc": [{"z": -3.48}],
    },
}


@pytest.mark.parametrize(
    "text",
    [
        "accuracy 76.9 %<!--fig x.acc ×100-->",
        "accuracy **76.9**<!--fig a.json:x.acc ×100-->",
        "quick 0.5<!--fig reproduce_quick.json:x.acc-->, older run 25 %<!--fig old/a.json:x.acc ×100-->",
        "0.77<!--fig a.json:x.acc-->, ppl 196<!--fig a.json:x.ppl-->",
        "32 MiB<!--fig d.json:core.8192.ours.fwd_bytes /MiB-->",
        "| top_p:0.9<!--figbase d.json:dec.top_p:0.9--> | 0.1147<!--fig .R--> |",
        "z = −3.48<!--fig d.json:mc.0.z-->",
        "1.15e-01<!--fig d.json:dec.top_p:0.9.R-->",
        "the syntax is `76.8<!--fig x.acc-->`, shown in code",
        "```\nNUMBER<!--fig KEY--> in a fenced block\n```",
    ],
)
def test_checker_accepts_figures_at_their_printed_precision(text):
    assert check_figures(text, FILES) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("76.8 %<!--fig x.acc ×100-->", "printed 76.8"),  # off by more than half a unit of 0.1
        ("76.9 %<!--fig x.accuracy ×100-->", "no results key 'x.accuracy'"),  # a key that does not exist
        ("196<!--fig x.ppl-->", "name the file"),  # two files hold it
        ("5<!--fig c.json:x-->", "no file"),
        ("0.1<!--fig d.json:dec.top_p:0.5.R-->", "no path"),
        ("0.1147<!--fig .R-->", "no <!--figbase"),
        ("the accuracy<!--fig x.acc-->", "no number right before"),
        ("76.9<!--fig x.acc %100-->", "unknown scale"),
    ],
)
def test_checker_rejects_wrong_or_unknown_figures(text, message):
    problems = check_figures(text, FILES)
    assert len(problems) == 1 and message in problems[0], problems


def test_coverage_rule_on_a_hand_made_page():
    page = "\n".join(
        [
            "# Page",
            "| figure | ours | paper |",
            "|---|---|---|",
            "| not a results section 1 | 2 | 3 |",
            "## What we measured",
            "Prose 12 is not a table.",
            "| setting (n = 8) | ours | published / target | decoder |",
            "|---|---|---|---|",
            "| a | 76.9<!--fig x.acc ×100--> (`--steps 100`) | 94.46 | top_k:3 |",
            "| b | 0.5 | – | greedy |",
            "## Limitations",
            "| x | ours |",
            "|---|---|",
            "| c | 7 |",
        ]
    )
    assert unmarked_numbers(page) == ["line 10 ('ours'): '0.5' has a number without a marker"]
