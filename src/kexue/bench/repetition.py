"""``kexue bench repetition``: the corpus study of archives/8128 and the Monte-Carlo check of R.

1. Bigram chains P estimated from PTB at character level, word level and after rebalanced
   encoding (learned on the characters); for each, the chain of every decoder (ancestral
   sampling, top-k, top-p, temperature, greedy) and its ζ, λ_1(P∘P), bounds and exact R.
   Greedy makes rows one-hot, so R diverges wherever the greedy map cycles: it is reported as the
   fraction of start tokens whose greedy chain cycles before eos.
2. The closed form against simulation: for random chains and for the corpus chains, simulate
   the decoding chain, count immediate repeats, and compare with R (relative error, z-score).

Writes into a run folder (``runs/bench-repetition-<time>/`` by default); ``--results FILE`` merges
the figures into a results JSON such as ``benchmarks/results/repetition.json``. The procedure is
:func:`kexue.recipes.repetition.run_study`; this module is its command-line entry point.
"""

from __future__ import annotations

from pathlib import Path

from kexue.bench.common import copy_file
from kexue.checks import check_new_run_dir, check_results_file
from kexue.errors import KexueError
from kexue.io import check_output_file, make_run_dir, read_json, write_json
from kexue.params import NonNegativeInt, check
from kexue.provenance import command_line, describe_machine, machine_facts
from kexue.recipes.repetition import figures_of, jsonable, plot_study, run_study
from kexue.results import write_results


def repetition(
    quick: bool = False,
    seed: NonNegativeInt = 0,
    out: Path | None = None,
    overwrite: bool = False,
    results: Path | None = None,
    details: Path | None = None,
    figure: Path | None = None,
    replot: bool = False,
) -> Path:
    """Corpus study and Monte-Carlo check of the repetition theory (archives/8128).

    Writes into the run folder ``out``: ``results.json`` (results schema; every row's ``command`` is
    this call's :func:`kexue.provenance.command_line`), ``detail.json`` (every decoder, bound,
    simulation and claim, and the measured ``machine`` facts) and the plot ``study.png``. Nothing outside it unless
    named: ``results`` merges the figures into that results JSON, ``details`` and ``figure`` copy
    the detail JSON and the plot there (the committed run: ``--results
    benchmarks/results/repetition.json --details benchmarks/results/repetition_detail.json --figure
    docs/figures/repetition_study.png``).

    Args:
        quick: 5k sentences and a 2k-word vocabulary, fewer decoders and random chains (minutes).
        seed: seeds the simulations and random chains.
        out: run folder (default runs/bench-repetition-<time>/).
        overwrite: replace an existing run folder ``out``.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/repetition.json).
        details: also copy the detail JSON here; with ``replot``, the detail JSON to redraw from.
        figure: also copy the plot (PNG) here; with ``replot``, where to draw it.
        replot: only redraw ``figure`` from the detail JSON ``details`` of an earlier run (no
            computation, no run folder).
    Returns:
        The path of the run's results.json (with ``replot``: of the figure).
    """
    arguments = dict(locals())  # the call as made: its command line and config.yaml
    if replot:
        check(
            figure is not None and details is not None,
            "--replot redraws --figure from the detail JSON of an earlier run: give both --details and --figure",
        )
        check(out is None and results is None, "--replot computes nothing: it takes no --out and no --results")
        check_output_file(figure, "--figure")
        detail = read_json(details, "--details")
        try:
            plot_study(detail, Path(figure))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise KexueError(
                f"--details {details} does not hold a repetition study (the detail.json of a run)"
            ) from None
        print(f"[repetition] redrew {figure} from {details}")
        return Path(figure)
    check_new_run_dir(out, overwrite)
    check_results_file(results)
    check_output_file(details, "--details")
    check_output_file(figure, "--figure")
    out = make_run_dir(out, "bench-repetition", arguments, overwrite=overwrite)
    machine = machine_facts()
    detail = run_study(quick=quick, seed=seed)
    detail["machine"] = machine
    figures = figures_of(detail, command_line("bench repetition", repetition, arguments))
    path = write_results(out / "results.json", figures)
    write_json(out / "detail.json", jsonable(detail))
    plot_study(detail, out / "study.png")
    if results is not None:
        write_results(results, figures, merge=True)
    for src, dst in ((out / "detail.json", details), (out / "study.png", figure)):
        if dst is not None:
            copy_file(src, dst)
    worst = max(abs(r["rel_error"]) for r in detail["mc"]["random"] + detail["mc"]["corpus"])
    zmax = max(abs(r["z"]) for r in detail["mc"]["random"] + detail["mc"]["corpus"])
    print(f"[repetition] measured on {describe_machine(machine)}")
    print(f"[repetition] Monte-Carlo vs closed form: max |rel error| {worst:.2%}, max |z| {zmax:.2f}")
    for level, res in detail["levels"].items():
        d = res["decoders"]
        print(
            f"[repetition] {level:10s} n={res['n']:5d}  R sample {_fmt(d['sample']['R'])}  top-p .9 "
            f"{_fmt(d['top_p:0.9']['R'])}  top-k 10 {_fmt(d['top_k:10']['R'])}  greedy cycles "
            f"{d['greedy']['cycle_fraction']:.1%}"
        )
    written = [p for p in (results, details, figure) if p is not None]
    print(f"[repetition] wrote {out}" + (f" and {', '.join(map(str, written))}" if written else ""))
    return path


def _fmt(x: float | None) -> str:
    return "diverges" if x is None else f"{x:.4g}"
