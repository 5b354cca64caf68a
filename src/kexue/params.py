"""Constrained types for command-line parameters, and the small checks every command shares.

jsonargparse enforces these types while parsing, so ``--batch_size 0``, ``--dropout 2`` or
``--device tpu`` are refused before any work, in one line that names the flag. Use them in the
signatures of the functions under ``kexue.commands`` / ``kexue.bench`` / ``kexue.reproduce`` and
in the config dataclasses they take. From Python the annotations are not enforced: values that
reach library code are checked there too.

Example::

    def train(steps: PositiveInt = 1000, dropout: Probability = 0.1, device: Device = "auto"): ...
"""

from __future__ import annotations

from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
    restricted_string_type,
)

from kexue.errors import KexueError

__all__ = [
    "AtLeastTwo",
    "ClosedUnitInterval",
    "Device",
    "Dropout",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "check",
    "resolve_device",
    "set_threads",
]

Probability = ClosedUnitInterval
# A dropout rate: 1.0 would zero everything.
Dropout = restricted_number_type("Dropout", float, [(">=", 0), ("<", 1)])
AtLeastTwo = restricted_number_type("AtLeastTwo", int, (">=", 2))
Device = restricted_string_type("Device", r"^(auto|cpu|cuda(:[0-9]+)?|mps)$")


def check(condition: bool, message: str) -> None:
    """Raise a one-line :class:`KexueError` with ``message`` unless ``condition`` holds.

    For rules a type cannot express (hidden size divisible by chunk size, heads dividing width):
    call these in one block at the top of a command, before its run folder is made.
    """
    if not condition:
        raise KexueError(message)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; None or 0 keeps torch's default."""
    if threads:
        check(threads > 0, f"--threads must be a positive integer, got {threads}")
        import torch

        torch.set_num_threads(threads)


def resolve_device(name: str):
    """``auto`` -> cuda when available else cpu; a device that is not there is a KexueError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KexueError(f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise KexueError("--device mps: MPS is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise KexueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
