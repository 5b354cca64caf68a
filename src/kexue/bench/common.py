"""What every ``kexue bench`` command shares: where it writes, and the machine it ran on.

The rule for every benchmark: everything a run makes (``results.json``, the details, the plots)
goes into its run folder ``--out`` (default ``runs/bench-<name>-<time>/``, with its
``config.yaml``). Nothing is written outside it unless a flag names the path: ``--results FILE``
merges the figures into that results JSON (e.g. ``benchmarks/results/nystrom.json``), and
``--details FILE`` / ``--figure FILE`` (or a benchmark's own ``--*_figure`` flags) copy the
details JSON / a plot there. So a committed file under ``benchmarks/results/`` or
``docs/figures/`` changes only when its path is on the command line.

Every figure's ``command`` comes from :func:`kexue.provenance.command_line` over the arguments
the benchmark was called with, and its details JSON holds the measured
:func:`kexue.provenance.machine_facts` under ``machine``. The up-front checks (``--out``,
``--results``, name lists, optional peers) live in :mod:`kexue.checks`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kexue.io import atomic_path


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a file the run made to a path the user named (atomically)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
