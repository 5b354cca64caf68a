"""When a command's default changes, pin the old default into the committed rows measured under it.

A results row's ``command`` names only the flags that differ from the defaults
(:func:`kexue.provenance.command_line`), so a changed default would silently change what an old row's
command runs. Each change is recorded below; for it, every committed row whose command runs that
command and does not name the flag gets ``<flag> <old value>``, placed where ``command_line`` puts
it (after the other ``--settings.*`` flags, before the flags that follow the settings). Values stay as
measured; nothing is rerun.

Changes:

- 2026-12-02, issue 15: ``kexue vae-cluster`` ``--settings.anchor`` 0.0 -> 10.0 (the ablation's
  winning lever became our default). Pinned in vae_cluster.json (the author's preset ran with
  anchor 0: it has no mixture initialisation, and the preset now names it), vae_ablation.json (the
  levers other than ``anchor``) and vae_su_init.json.

Usage: ``python benchmarks/pin_default.py`` rewrites the files; ``--check`` only lists what would
change and exits 1 if anything would.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from kexue.io import write_json
from kexue.results import load_results

RESULTS = Path(__file__).resolve().parent / "results"

# (command prefix, flag, old default, results files measured under it)
CHANGES = [
    ("kexue vae-cluster", "--settings.anchor", "0.0", ("vae_cluster.json", "vae_ablation.json", "vae_su_init.json")),
]
# flags that command_line writes after the settings (the run_study / train_run parameters that follow them)
AFTER_SETTINGS = ("--device", "--preset", "--pretrained")


def pin(command: str, prefix: str, flag: str, value: str) -> str:
    """``command`` with ``flag value`` added when it runs ``prefix`` and does not name ``flag``."""
    words = shlex.split(command)
    if not command.startswith(prefix + " ") or flag in words:
        return command
    at = len(words)
    settings = [i for i, w in enumerate(words) if w.startswith("--settings.")]
    if settings:
        at = settings[-1] + 2  # after the last setting and its value
    else:
        later = [i for i, w in enumerate(words) if w in AFTER_SETTINGS]
        at = later[0] if later else at
    return shlex.join(words[:at] + [flag, value] + words[at:])


def pinned_rows(path: Path, prefix: str, flag: str, value: str) -> tuple[dict, list[str]]:
    """The rows of ``path`` with the flag pinned, and the keys that changed."""
    rows = load_results(path)
    out, changed = {}, []
    for key, row in rows.items():
        command = pin(row["command"], prefix, flag, value)
        changed += [key] if command != row["command"] else []
        out[key] = {**row, "command": command}
    return out, changed


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    pending = 0
    for prefix, flag, value, files in CHANGES:
        for name in files:
            path = RESULTS / name
            rows, changed = pinned_rows(path, prefix, flag, value)
            for key in changed:
                print(f"{name}: {key}: + {flag} {value}")
            pending += len(changed)
            if changed and not check_only:
                write_json(path, rows)
    return 1 if check_only and pending else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
