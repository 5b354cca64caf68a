"""When a command's default changes, pin the old default into the committed rows measured under it.

A results row's ``command`` names only the flags that differ from the defaults
(:func:`kexue.provenance.command_line`), so a changed default would silently change what an old row's
command runs. Each change is recorded below and applied once: every row of its files whose command
runs that command and does not name the flag gets ``<flag> <old value>``, placed where
``command_line`` puts it (the pinned setting is the last field of its settings class: after the other
``--settings.*`` flags, before the parameters that follow the settings). Values stay as measured;
nothing is rerun. The rows pinned, with their values, go to ``results/pinned_defaults.json``; rows
written later by the same command (under the new default) are never touched, and a pinned row that a
new measurement has replaced (its value changed) is no longer checked.

Changes:

- ``anchor-2026-12-02`` (issue 15): ``kexue vae-cluster study|train`` ``--settings.anchor`` 0.0 -> 10.0
  (the ablation's winning lever became our default), in vae_cluster.json (the author's preset ran with
  anchor 0: it has no mixture initialisation, and the preset now names it; the earlier 5-seed
  studies), vae_ablation.json (the levers other than ``anchor``) and vae_su_init.json.

Usage: ``python benchmarks/pin_default.py`` applies the changes not yet applied; ``--check`` changes
nothing, and exits 1 if a change is not applied or a pinned row no longer names its flag.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from kexue.io import write_json
from kexue.results import load_results

RESULTS = Path(__file__).resolve().parent / "results"
LEDGER = RESULTS / "pinned_defaults.json"

# name -> (commands, flag, old default, results files measured under it)
CHANGES = {
    "anchor-2026-12-02": (
        ("kexue vae-cluster study", "kexue vae-cluster train"),
        "--settings.anchor",
        "0.0",
        ("vae_cluster.json", "vae_ablation.json", "vae_su_init.json"),
    ),
}
# parameters that command_line writes after the settings (those of run_study / train_run that follow them)
AFTER_SETTINGS = ("--device", "--resume", "--overwrite", "--preset", "--pretrained", "--jobs")


def pin(command: str, prefixes: tuple[str, ...], flag: str, value: str) -> str:
    """``command`` with ``flag value`` added when it runs one of ``prefixes`` and does not name ``flag``."""
    words = shlex.split(command)
    if not any(command.startswith(p + " ") or command == p for p in prefixes) or flag in words:
        return command
    settings = [i for i, w in enumerate(words) if w.startswith("--settings.")]
    later = [i for i, w in enumerate(words) if w in AFTER_SETTINGS]
    at = settings[-1] + 2 if settings else (later[0] if later else len(words))  # after the last setting's value
    return shlex.join(words[:at] + [flag, value] + words[at:])


def apply(name: str) -> dict[str, dict[str, float]]:
    """Pin change ``name`` into its files; returns file -> {key: value} of the rows pinned."""
    prefixes, flag, value, files = CHANGES[name]
    pinned: dict[str, dict[str, float]] = {}
    for file in files:
        rows = load_results(RESULTS / file)
        done = {}
        for key, row in rows.items():
            command = pin(row["command"], prefixes, flag, value)
            if command != row["command"]:
                rows[key] = {**row, "command": command}
                done[key] = row["value"]
        if done:
            write_json(RESULTS / file, rows)
            pinned[file] = done
    return pinned


def problems(name: str, pinned: dict[str, dict[str, float]]) -> list[str]:
    """Pinned rows of change ``name`` still measured as then whose command no longer names the flag."""
    flag = CHANGES[name][1]
    out = []
    for file, keys in pinned.items():
        rows = load_results(RESULTS / file)
        for key, value in keys.items():
            row = rows.get(key)
            if row is not None and row["value"] == value and flag not in shlex.split(row["command"]):
                out.append(f"{file}: {key} no longer names {flag}")
    return out


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    ledger = json.loads(LEDGER.read_text(encoding="utf-8")) if LEDGER.is_file() else {}
    failed = False
    for name in CHANGES:
        if name in ledger:
            for line in problems(name, ledger[name]):
                print(line)
                failed = True
        elif check_only:
            print(f"{name}: not applied")
            failed = True
        else:
            ledger[name] = apply(name)
            write_json(LEDGER, ledger)
            print(f"{name}: pinned {sum(map(len, ledger[name].values()))} rows")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
