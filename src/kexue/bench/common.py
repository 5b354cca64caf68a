"""What every ``kexue bench`` command shares: where it writes, checked before any work.

The rule for every benchmark: everything a run makes (``results.json``, the details, the plots)
goes into its run folder ``--out`` (default ``runs/bench-<name>-<time>/``, with its
``config.yaml``). Nothing is written outside it unless a flag names the path: ``--results FILE``
merges the figures into that results JSON (e.g. ``benchmarks/results/nystrom.json``), and
``--details FILE`` / ``--figure FILE`` (or a benchmark's own ``--*_figure`` flags) copy the
details JSON / a plot there. So a committed file under ``benchmarks/results/`` or
``docs/figures/`` changes only when its path is on the command line.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kexue.errors import KexueError
from kexue.io import atomic_path, check_output_dir, check_output_file, reading
from kexue.results import load_results


def check_results_file(path: str | os.PathLike | None, flag: str = "--results") -> None:
    """Refuse, before any work, a results JSON that cannot be written or merged into.

    The path must be writable and not a folder; an existing file must already be a results JSON
    (it is merged into, so a malformed one would otherwise fail only after the benchmark).
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
        how = "add --resume to continue that run or --overwrite to replace it" if resume is not None else \
            "add --overwrite to replace it"
        raise KexueError(f"--out {out} is not empty; {how}, or choose another folder")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a file the run made to a path the user named (atomically)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


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
    """Refuse up front a benchmark whose peers are not installed: ``(module, pip hint)`` pairs."""
    import importlib.util

    for module, hint in modules:
        if importlib.util.find_spec(module) is None:
            raise KexueError(f"this benchmark needs {module} ({hint})")
