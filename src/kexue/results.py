"""Measured figures in the one ``results.json`` schema that every command writes.

A results file is a flat JSON object: one key per figure, ``<article>.<metric>``, each
``{"value": float, "published": float | null, "source": str | null, "command": str}``.
Benchmarks, ``kexue reproduce`` and single commands all write this one format.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from kexue.errors import KexueError
from kexue.io import check_output_file, reading, write_json


@dataclass(frozen=True)
class Figure:
    """One measured number beside the published one it is compared with."""

    key: str
    value: float
    published: float | None = None
    source: str | None = None
    command: str = ""

    def entry(self) -> dict:
        d = asdict(self)
        del d["key"]
        d["value"] = float(self.value)
        return d


def to_dict(figures: list[Figure]) -> dict[str, dict]:
    """Figures as the flat results mapping; non-finite values are refused (JSON has none)."""
    out: dict[str, dict] = {}
    for f in figures:
        if not math.isfinite(float(f.value)):
            raise ValueError(f"figure {f.key} is not finite: {f.value}")
        out[f.key] = f.entry()
    return out


def write_results(path: str | os.PathLike, figures: list[Figure], merge: bool = False) -> Path:
    """Write figures to a results JSON atomically; with ``merge``, keep keys already in the file."""
    path = Path(path)
    data = load_results(path) if merge and path.exists() else {}
    data.update(to_dict(figures))
    return write_json(path, data)


def load_results(path: str | os.PathLike) -> dict[str, dict]:
    """Read a results JSON; a missing or malformed file is a one-line :class:`KexueError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KexueError(f"results file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise KexueError(f"results file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
        raise KexueError(f"results file {path} does not follow the results.json schema")
    return data


def check_results_file(path: str | os.PathLike | None, flag: str = "--results") -> None:
    """Refuse, before any work, a results JSON that cannot be written or merged into.

    The path must be writable and not a folder; an existing file must already be a results JSON
    (it is merged into, so a malformed one would otherwise fail only after the work).
    """
    if path is None:
        return
    check_output_file(path, flag)
    if Path(path).exists():
        with reading(path, flag):
            try:
                load_results(path)
            except KexueError as e:
                raise KexueError(f"{flag} {path}: cannot merge into it ({e})") from None
