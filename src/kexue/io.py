"""Atomic file writes and run folders: no half-written output is ever left behind."""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Example: ``with atomic_path("w.safetensors") as tmp: save_file(tensors, tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def make_run_dir(out: str | os.PathLike | None, command: str, config: dict[str, Any]) -> Path:
    """Create the run folder (default ``runs/<command>-<timestamp>/``) and save the resolved config.

    Args:
        out: folder to use, or None for the default.
        command: e.g. ``"vae-cluster-train"``; names the default folder.
        config: the resolved arguments of the command; saved as ``config.yaml``.
    Returns:
        The folder.
    """
    if out is None:
        out = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plain = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in config.items()}
    write_text(out / "config.yaml", yaml.safe_dump({"command": command, **plain}, sort_keys=False))
    return out
