"""Where a figure comes from: the exact command that reproduces it, and the machine that ran it.

Every results row stores a ``command``. It is derived here from the arguments the command was
actually called with (the values jsonargparse parsed, or a Python caller's arguments), never typed
by hand: :func:`command_line` prints ``kexue <group> <command>`` plus a flag for each argument
that differs from its default, so that pasting it reruns the same work.

Example::

    def train(dim: int = 256, steps: int = 2000, out: Path | None = None): ...
    command_line("lm train", train, {"dim": 16, "steps": 2000, "out": "runs/x"})
    # -> 'kexue lm train --dim 16'
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import platform
import shlex
from collections.abc import Callable
from typing import Any

from kexue.cli import FLAGS

# Arguments that say where output goes or how a folder is reused, not what is computed.
NOT_IN_COMMAND = frozenset(
    {"out", "resume", "overwrite", "config", "results", "figure", "details", "error_figure", "time_figure"}
)
# Booleans the CLI accepts bare: a true one is written bare in a rerun command.
BARE_FLAGS = frozenset(flag.removeprefix("--") for flag in FLAGS)


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return shlex.quote(json.dumps(list(value)))
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return shlex.quote(str(value))


def _flags(name: str, value: Any, default: Any) -> list[str]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        base = default if dataclasses.is_dataclass(default) else type(value)()
        out = []
        for f in dataclasses.fields(value):
            out += _flags(f"{name}.{f.name}", getattr(value, f.name), getattr(base, f.name))
        return out
    if _same(value, default):
        return []
    if isinstance(value, bool) and value and name in BARE_FLAGS:
        return [f"--{name}"]
    return [f"--{name} {_format(value)}"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    a = os.fspath(a) if isinstance(a, os.PathLike) else a
    b = os.fspath(b) if isinstance(b, os.PathLike) else b
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def command_line(name: str, fn: Callable, arguments: dict[str, Any], keep: tuple[str, ...] = ()) -> str:
    """``kexue <name>`` plus the flags of ``arguments`` that differ from ``fn``'s defaults.

    Args:
        name: the command as typed after ``kexue``, e.g. ``"lm train"``.
        fn: the command function (its signature gives the defaults and the flag order).
        arguments: the values it was called with (e.g. its ``locals()`` at entry).
        keep: arguments printed even when they equal the default (e.g. ``("threads",)``).
    Returns:
        One shell-ready line.
    """
    parts = [f"kexue {name}"]
    for pname, param in inspect.signature(fn).parameters.items():
        if pname in NOT_IN_COMMAND or pname not in arguments:
            continue
        default = param.default if param.default is not inspect.Parameter.empty else object()
        value = arguments[pname]
        if pname in keep and _same(value, default) and not dataclasses.is_dataclass(value):
            parts.append(f"--{pname} {_format(value)}")
            continue
        parts += _flags(pname, value, default)
    return " ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """What ran a measurement: CPU model, cores, torch threads in use, load average, versions, GPU."""
    import torch

    facts: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        facts["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        facts["load_average_1m"] = None
    facts["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return facts


def describe_machine(facts: dict[str, Any] | None = None) -> str:
    """One line for reports: ``'AMD EPYC ..., 2 cores, 1 torch thread, load 0.4, torch 2.13.0'``."""
    f = facts or machine_facts()
    threads = f["torch_threads"]
    text = (
        f"{f['cpu']}, {f['cores']} cores, {threads} torch thread{'s' if threads != 1 else ''}, "
        f"load {f['load_average_1m']}, torch {f['torch']}"
    )
    return text + (f", GPU {f['gpu']}" if f.get("gpu") else "")
