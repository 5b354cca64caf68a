"""Text pairs (source -> target) split by group: the corpora of article 3 (titles) and SimBERT.

A :class:`TextPair` is ``(source, target, group)``; the group says which pairs belong together
(pairs of one Debian source package, one man page, one paraphrase cluster) and is what splits are
made of, so that no group is ever in two splits (:func:`split_by_group`). A :class:`PairCorpus`
holds the three splits.

Committed snapshots (no network, no apt; built by :mod:`kexue.data.pairs_build`, provenance and
licence in ``corpora/README.md``):

- ``debian-en``: Debian package descriptions, long description -> short description (English);
- ``debian-zh``: the Chinese (``zh_CN``) translations of those descriptions and the NAME / 描述
  sections of the ``manpages-zh`` pages (character level).

Users' own pairs: TSV (``source<TAB>target`` or ``source<TAB>target<TAB>group``) and JSONL
(``{"source": ..., "target": ..., "group": ...}``, group optional), optionally ``.gz`` / ``.xz``
compressed. A pair without a group is its own group, keyed by its source text (pairs that share a
source stay together). A bad line is one :class:`KexueError` naming the file and the line.

Example::

    corpus = load_pairs("debian-en")
    corpus.train[0]            # TextPair(source='0 A.D. (pronounced ...', target='Real-time ...', group='0ad')
    mine = split_by_group(read_pairs("pairs.tsv"), seed=0)   # 90 / 5 / 5 by group
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from kexue.errors import KexueError
from kexue.io import read_bytes, read_json

SPLITS = ("train", "valid", "test")
SNAPSHOTS = ("debian-en", "debian-zh")
JSONL_KEYS = ("source", "target", "group")


@dataclass(frozen=True)
class TextPair:
    """One example: the text to read (``source``), the text to write (``target``), its ``group``."""

    source: str
    target: str
    group: str


@dataclass(frozen=True)
class PairCorpus:
    """Three splits of pairs; no group is in two of them. ``meta`` holds the provenance (snapshots)."""

    train: tuple[TextPair, ...]
    valid: tuple[TextPair, ...]
    test: tuple[TextPair, ...]
    name: str = ""
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def __getitem__(self, split: str) -> tuple[TextPair, ...]:
        if split not in SPLITS:
            raise KexueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, split)

    def counts(self) -> dict[str, int]:
        """Pairs per split, e.g. ``{"train": 50000, "valid": 2800, "test": 2800}``."""
        return {s: len(self[s]) for s in SPLITS}

    def groups(self, split: str) -> set[str]:
        return {p.group for p in self[split]}


# ---- users' files --------------------------------------------------------------------------


def _decompress(path: Path, data: bytes, what: str) -> bytes:
    """The bytes of ``path``, decompressed when its name ends in .gz, .xz or .bz2."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            return gzip.decompress(data)
        if suffix == ".xz":
            return lzma.decompress(data)
        if suffix == ".bz2":
            return bz2.decompress(data)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise KexueError(f"{what} {path} is a corrupt compressed file ({e})") from None
    return data


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines; a line that is not UTF-8 is an error naming it."""
    data = _decompress(path, read_bytes(path, what), what)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise KexueError(
                f"{what} {path} line {number} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def _pair(source, target, group, where: str) -> TextPair:
    for name, value in (("source", source), ("target", target)):
        if not isinstance(value, str):
            raise KexueError(f"{where}: {name} should be a string, not {type(value).__name__}")
        if not value.strip():
            raise KexueError(f"{where}: empty {name}")
    source, target = source.strip(), target.strip()
    if group is None:
        return TextPair(source, target, source)
    if isinstance(group, bool) or not isinstance(group, (str, int)):
        raise KexueError(f"{where}: group should be a string or an integer, not {type(group).__name__}")
    group = str(group).strip()
    if not group:
        raise KexueError(f"{where}: empty group")
    return TextPair(source, target, group)


def _json_object(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise KexueError(f"{where} is not valid JSON (column {e.colno}: {e.msg})") from None
    if not isinstance(row, dict):
        raise KexueError(f"{where} should hold a JSON object, not {type(row).__name__}")
    return row


def read_tsv_pairs(path: str | Path, what: str = "pairs file") -> list[TextPair]:
    """Pairs from a TSV file: ``source<TAB>target`` or ``source<TAB>target<TAB>group`` per line.

    Blank lines are skipped; a line with fewer than 2 or more than 3 fields, an empty field or
    bytes that are not UTF-8 is a :class:`KexueError` naming the file and the line.
    """
    path = Path(path)
    pairs = []
    for number, line in _lines(path, what):
        where = f"{what} {path} line {number}"
        fields = line.split("\t")
        if len(fields) < 2:
            raise KexueError(f"{where}: expected source<TAB>target, found no tab")
        if len(fields) > 3:
            raise KexueError(
                f"{where}: expected source<TAB>target[<TAB>group], found {len(fields)} tab-separated fields"
            )
        pairs.append(_pair(fields[0], fields[1], fields[2] if len(fields) == 3 else None, where))
    if not pairs:
        raise KexueError(f"{what} {path} holds no pairs")
    return pairs


def read_jsonl_pairs(path: str | Path, what: str = "pairs file") -> list[TextPair]:
    """Pairs from a JSONL file: one ``{"source": ..., "target": ..., "group": ...}`` object a line.

    ``group`` is optional; any other key, a missing key, an empty text, malformed JSON or bytes
    that are not UTF-8 is a :class:`KexueError` naming the file and the line.
    """
    path = Path(path)
    pairs = []
    for number, line in _lines(path, what):
        where = f"{what} {path} line {number}"
        row = _json_object(line, where)
        missing = [k for k in ("source", "target") if k not in row]
        if missing:
            raise KexueError(f"{where}: missing {' and '.join(map(repr, missing))}")
        unknown = sorted(set(row) - set(JSONL_KEYS))
        if unknown:
            raise KexueError(f"{where}: unknown key {', '.join(map(repr, unknown))} (keys: {', '.join(JSONL_KEYS)})")
        pairs.append(_pair(row["source"], row["target"], row.get("group"), where))
    if not pairs:
        raise KexueError(f"{what} {path} holds no pairs")
    return pairs


def read_pairs(path: str | Path, what: str = "pairs file") -> list[TextPair]:
    """Pairs from a ``.tsv`` / ``.txt`` or ``.jsonl`` file (each optionally ``.gz`` / ``.xz`` / ``.bz2``)."""
    path = Path(path)
    name = path.name.lower()
    for suffix in (".gz", ".xz", ".bz2"):
        name = name.removesuffix(suffix)
    if name.endswith(".jsonl"):
        return read_jsonl_pairs(path, what)
    if name.endswith((".tsv", ".txt")):
        return read_tsv_pairs(path, what)
    raise KexueError(f'{what} {path}: name it .tsv (source<TAB>target) or .jsonl ({{"source": ..., "target": ...}})')


# ---- splitting -----------------------------------------------------------------------------


def _rank(group: str, seed: int) -> bytes:
    """A stable pseudo-random key of a group (the same on every machine and Python run)."""
    return hashlib.sha256(f"{seed}\0{group}".encode()).digest()


def split_by_group(
    pairs: Iterable[TextPair], fractions: Sequence[float] = (0.9, 0.05, 0.05), seed: int = 0, name: str = ""
) -> PairCorpus:
    """Split pairs into train / valid / test by group, about ``fractions`` of the pairs in each.

    Groups are shuffled by a hash of ``(seed, group)`` and taken in that order until each split
    has its share of pairs, so the result depends only on the pairs and the seed, and no group is
    in two splits. Pairs keep their input order inside a split. Every split with a positive
    fraction gets at least one group (a :class:`KexueError` when there are too few groups).

    Example: ``split_by_group(pairs, (0.8, 0.1, 0.1), seed=1).counts()``.
    """
    pairs = list(pairs)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise KexueError(f"split fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    sizes: dict[str, int] = {}
    for p in pairs:
        sizes[p.group] = sizes.get(p.group, 0) + 1
    order = sorted(sizes, key=lambda g: _rank(g, seed))
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if len(order) < len(wanted):
        splits = " / ".join(("train", "valid", "test")[i] for i in wanted)
        raise KexueError(
            f"{name + ': ' if name else ''}cannot split {len(order)} group(s) into {len(wanted)} non-empty splits "
            f"({splits}): give pairs of at least {len(wanted)} different groups (a pair without a group "
            "is grouped by its source text)"
        )
    ends = [sum(fractions[: k + 1]) * len(pairs) for k in range(3)]  # cumulative pairs where split k ends
    split_of: dict[str, int] = {}
    j, taken, in_split = 0, 0, 0  # current split wanted[j], pairs assigned so far, groups in wanted[j]
    for i, g in enumerate(order):
        later = len(wanted) - 1 - j  # splits still to fill after this one
        # move on once this split holds a group and has its share, or the later splits need
        # every group that is left
        if later and in_split and (taken >= ends[wanted[j]] or len(order) - i <= later):
            j, in_split = j + 1, 0
        split_of[g] = wanted[j]
        taken += sizes[g]
        in_split += 1
    buckets: tuple[list, list, list] = ([], [], [])
    for p in pairs:
        buckets[split_of[p.group]].append(p)
    return PairCorpus(*(tuple(b) for b in buckets), name=name)


# ---- committed snapshots -------------------------------------------------------------------


def snapshot_dir() -> Path:
    """The folder of the committed corpora (package data: ``kexue/data/corpora``)."""
    return Path(str(resources.files("kexue.data") / "corpora"))


def read_snapshot(path: str | Path, name: str = "") -> PairCorpus:
    """A split corpus from a ``.jsonl.xz`` snapshot: one ``{"split", "group", "source", "target"}`` a line."""
    path = Path(path)
    what = "corpus snapshot"
    buckets: dict[str, list[TextPair]] = {s: [] for s in SPLITS}
    keys = {"split", "group", "source", "target"}
    for number, line in _lines(path, what):
        row = _json_object(line, f"{what} {path} line {number}")
        if (
            row.keys() != keys
            or row["split"] not in buckets
            or not all(isinstance(row[k], str) and row[k] for k in ("group", "source", "target"))
        ):
            raise KexueError(
                f"{what} {path} line {number}: expected non-empty split (train|valid|test), group, source and target"
            )
        buckets[row["split"]].append(TextPair(row["source"], row["target"], row["group"]))
    return PairCorpus(*(tuple(buckets[s]) for s in SPLITS), name=name)


def load_pairs(name: str) -> PairCorpus:
    """A committed corpus by name (``debian-en`` or ``debian-zh``), with its provenance in ``meta``.

    Loaded once per process (about a second for ``debian-en``) and shared: treat it as read-only.
    Example: ``load_pairs("debian-zh").counts()`` -> the counts given in ``corpora/debian-zh.json``.
    """
    if name not in SNAPSHOTS:
        raise KexueError(f"unknown corpus {name!r}; the committed ones are {', '.join(SNAPSHOTS)}")
    return _load_snapshot(name)


@cache
def _load_snapshot(name: str) -> PairCorpus:
    folder = snapshot_dir()
    corpus = read_snapshot(folder / f"{name}.jsonl.xz", name=name)
    meta = read_json(folder / f"{name}.json", "corpus provenance")
    return PairCorpus(corpus.train, corpus.valid, corpus.test, name=name, meta=meta)
