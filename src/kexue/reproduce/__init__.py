"""``kexue reproduce``: run each article's section and write the report.

Each section is a module with ``run(out: Path, quick: bool) -> SectionResult`` that only calls
kexue's public functions, so every number in the report is something a user can rerun.
"""

from __future__ import annotations

import time
from pathlib import Path

from kexue.checks import check_new_run_dir, comma_names
from kexue.io import make_run_dir, write_json
from kexue.params import check
from kexue.provenance import describe_machine, machine_facts
from kexue.reproduce import decoding, gibbs, nystrom, onlstm, repetition, seq2seq, simbert, vae_cluster
from kexue.reproduce.report import SectionResult, write_report

# Ordered as the articles are numbered.
SECTIONS = {
    "vae": vae_cluster.run,
    "onlstm": onlstm.run,
    "seq2seq": seq2seq.run,
    "simbert": simbert.run,
    "decoding": decoding.run,
    "gibbs": gibbs.run,
    "repetition": repetition.run,
    "nystrom": nystrom.run,
}


def reproduce(
    quick: bool = False, full: bool = False, only: str | None = None, out: Path | None = None, overwrite: bool = False
) -> Path:
    """Run the article sections and write report.md, figures/*.png, results.json and machine.json
    (the measured machine facts the report prints).

    Args:
        quick: small settings that finish in minutes on 2 CPU cores (the default).
        full: the paper-like settings (hours; several seeds).
        only: comma-separated section names to run (default: all): vae, onlstm, seq2seq, simbert, decoding,
            gibbs, repetition, nystrom.
        out: run folder (default runs/reproduce-<timestamp>/).
        overwrite: replace an existing run folder ``out``.
    Returns:
        The path of report.md.
    """
    config = dict(locals())
    check(not (quick and full), "choose one of --quick and --full")
    names = list(SECTIONS) if only is None else comma_names(only, tuple(SECTIONS), "--only")
    check_new_run_dir(out, overwrite)
    mode = "full" if full else "quick"
    out = make_run_dir(out, "reproduce", config, overwrite=overwrite)
    (out / "figures").mkdir(exist_ok=True)
    machine = machine_facts()  # before the work: the load average is other jobs', not ours
    write_json(out / "machine.json", machine)
    print(f"[reproduce] on {describe_machine(machine)}", flush=True)
    results: list[SectionResult] = []
    for name in names:
        t0 = time.perf_counter()
        print(f"[reproduce] section {name} ({mode})", flush=True)
        section = SECTIONS[name](out, quick=not full)
        section.seconds = time.perf_counter() - t0
        results.append(section)
        write_report(out, results, mode, machine)  # keep a valid report after every section
    report = write_report(out, results, mode, machine)
    print(f"[reproduce] wrote {report} and {out / 'results.json'}")
    return report
