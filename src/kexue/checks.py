"""Checks a command makes before any work: its output folder, a results file, name lists, peers.

They answer a bad value with one :class:`~kexue.errors.KexueError` naming the flag, so that a
mistake costs nothing: no data read, no folder made, no benchmark run. (:func:`check_results_file`
lives beside the results schema in :mod:`kexue.results`; it is re-exported here so that every
up-front check is found in one place.)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from kexue.errors import KexueError
from kexue.io import check_output_dir
from kexue.results import check_results_file

__all__ = ["check_new_run_dir", "check_results_file", "comma_names", "require_modules"]


def check_new_run_dir(out: str | os.PathLike | None, overwrite: bool = False, resume: bool | None = None) -> None:
    """The checks :func:`kexue.io.make_run_dir` makes on ``--out``, done early (before reading data).

    ``resume`` is None for a command that cannot resume (the message then offers only --overwrite).
    """
    if out is None:
        return
    out = Path(out)
    check_output_dir(out)
    if resume and overwrite:
        raise KexueError("choose one of --resume and --overwrite")
    if resume:
        if not (out / "config.yaml").is_file():
            raise KexueError(f"--resume: {out} holds no run to resume")
        return
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        how = (
            "add --resume to continue that run or --overwrite to replace it"
            if resume is not None
            else "add --overwrite to replace it"
        )
        raise KexueError(f"--out {out} is not empty; {how}, or choose another folder")


def comma_names(text: str, known: tuple[str, ...] | None, flag: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (order kept, repeats dropped); refuses an empty list and unknown names."""
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not names:
        raise KexueError(f"{flag} {text!r} names nothing" + (f"; choose from {', '.join(known)}" if known else ""))
    if known is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise KexueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return names


def require_modules(*modules: tuple[str, str]) -> None:
    """Refuse up front work whose optional dependencies are not installed: ``(module, pip hint)`` pairs."""
    for module, hint in modules:
        if importlib.util.find_spec(module) is None:
            raise KexueError(f"this command needs {module} ({hint})")
