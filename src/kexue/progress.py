"""Progress bars: one way to make them, so that one rule decides where they show.

The CLI turns bars off when stderr is not a terminal (a log file or a pipe would fill with
carriage returns and share lines with messages) unless the user set any ``TQDM_*`` variable,
e.g. ``TQDM_MININTERVAL=60`` for a line a minute. Library callers get tqdm's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any):
    """A tqdm bar (``tqdm.auto``); ``enabled=False`` hides it whatever the environment says.

    Example: ``for x in progress(items, desc="decoders"): ...``
    """
    from tqdm.auto import tqdm

    if not enabled:
        kwargs["disable"] = True
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
