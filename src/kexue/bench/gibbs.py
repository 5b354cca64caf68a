"""``kexue bench gibbs``: our batched pseudo-Gibbs sampler vs the straightforward one, same model, same run.

The straightforward sampler (:func:`kexue.generation.gibbs.naive_gibbs`, as Su's example does it):
one chain, the full MLM head over every position at every step, one position per step. Ours:
the head only at the redrawn position (:class:`kexue.models.mlm.MaskedLM`), B chains in one
forward pass. The three are timed interleaved, repeats rounds, so that the ratios see the same
machine load; rate = redrawn positions per second, median over repeats.

Figures: ``gibbs.speedup_vs_naive`` (ours, ``chains`` batched, vs naive), ``gibbs.speedup_head_only``
(ours with one chain vs naive: the head alone), ``gibbs.speedup_batched16`` (ours with ``chains``
chains vs ours with one chain, looped), ``gibbs.positions_per_s.<naive|single|batched>``.
The project's targets (goals, not published figures): speedup_vs_naive >= 3 on CPU;
speedup_batched16 >= 8 on a GPU.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from kexue.bench.common import copy_file
from kexue.checks import check_new_run_dir, check_results_file, require_modules
from kexue.generation.gibbs import BanTokens, gibbs_sample, init_tokens, naive_gibbs
from kexue.io import check_output_file, make_run_dir, write_json
from kexue.params import Device, NonNegativeInt, PositiveInt, check, resolve_device, set_threads
from kexue.progress import progress
from kexue.provenance import command_line, describe_machine, machine_facts
from kexue.results import Figure, write_results

TARGETS = {"speedup_vs_naive": {"cpu": 3.0}, "speedup_batched16": {"cuda": 8.0}}


def load_bench_model(model: str, device: torch.device):
    """``minilm`` (MiniLM encoder + new tied head: the speed does not depend on training) or a folder."""
    from kexue.models.mlm import MaskedLM, Tokenizer, load_masked_lm, minilm_dir, minilm_mlm

    if model == "minilm":
        tok = Tokenizer.from_folder(minilm_dir())
        return MaskedLM(minilm_mlm().to(device).eval(), tok.pad_id), tok
    from kexue.recipes.mlm import check_model_folder

    return load_masked_lm(check_model_folder(model), device)


@torch.no_grad()
def gibbs(
    model: str = "minilm",
    length: PositiveInt = 32,
    chains: PositiveInt = 16,
    steps: PositiveInt = 40,
    repeats: PositiveInt = 3,
    device: Device = "cpu",
    threads: PositiveInt | None = None,
    seed: NonNegativeInt = 0,
    results: Path | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    details: Path | None = None,
) -> dict[str, float]:
    """Redrawn positions per second: our sampler (head only where redrawn, chains batched) vs the naive one.

    Args:
        model: minilm (the MiniLM encoder with a new head), a `kexue mlm train` run or a *ForMaskedLM folder.
        length: sentence length in tokens (without [CLS] / [SEP]).
        chains: chains batched in one forward pass (16 for gibbs.speedup_batched16).
        steps: steps timed per chain and method.
        repeats: timed rounds, interleaved naive / single / batched (median taken).
        device: cpu, cuda, cuda:N or auto.
        threads: torch CPU threads (default: torch's choice).
        seed: seed of the chains.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/gibbs.json).
        out: run folder (default runs/bench-gibbs-<time>/).
        overwrite: replace an existing run folder.
        details: also copy the run's timings.json (with the machine facts) here.
    Returns:
        gibbs.speedup_vs_naive, gibbs.speedup_head_only, gibbs.speedup_batched16, gibbs.positions_per_s.*.
    """
    arguments = dict(locals())
    dev = resolve_device(device)
    check_new_run_dir(out, overwrite)
    check_results_file(results)
    check_output_file(details, "--details")
    require_modules(("transformers", "pip install 'kexue[hf]'"))
    set_threads(threads)
    mlm, tok = load_bench_model(model, dev)
    limit = mlm.model.config.max_position_embeddings - 2
    check(length <= limit, f"--length {length}: the model reads at most {limit} tokens")
    out = make_run_dir(out, "bench-gibbs", arguments, overwrite=overwrite)
    machine = machine_facts()
    cmd = command_line("bench gibbs", gibbs, arguments)
    ban = [BanTokens(tok.banned)]

    def start(n):
        return init_tokens([length] * n, tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def run_naive():
        naive_gibbs(mlm.full, start(1), steps, tok.mask_id, tok.banned, torch.Generator(dev).manual_seed(seed))
        return steps

    def run_ours(n):
        def f():
            g = torch.Generator(dev).manual_seed(seed)
            gibbs_sample(
                mlm, start(n), steps=steps, mask_id=tok.mask_id, pad_id=tok.pad_id, processors=ban, generator=g
            )
            return steps * n

        return f

    methods = {"naive": run_naive, "single": run_ours(1), "batched": run_ours(chains)}
    for f in methods.values():  # warm-up
        f()
    times = {k: [] for k in methods}
    bar = progress(total=repeats * len(methods), desc="bench gibbs")
    for r in range(repeats):
        order = list(methods.items()) if r % 2 == 0 else list(reversed(methods.items()))
        for name, f in order:
            sync()
            t0 = time.perf_counter()
            n = f()
            sync()
            times[name].append(n / (time.perf_counter() - t0))
            bar.update(1)
    bar.close()
    rate = {k: statistics.median(v) for k, v in times.items()}
    values = {
        "gibbs.speedup_vs_naive": rate["batched"] / rate["naive"],
        "gibbs.speedup_head_only": rate["single"] / rate["naive"],
        f"gibbs.speedup_batched{chains}": rate["batched"] / rate["single"],
        **{f"gibbs.positions_per_s.{k}": v for k, v in rate.items()},
    }
    figures = [Figure(k, v, command=cmd) for k, v in values.items()]
    write_json(out / "timings.json", {"machine": machine, "command": cmd, "targets": TARGETS, "positions_per_s": times})
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    if details is not None:
        copy_file(out / "timings.json", details)
    print(f"measured on {describe_machine(machine)} ({dev})")
    print(
        f"gibbs bench (length {length}): naive {rate['naive']:.1f}, ours 1 chain {rate['single']:.1f}, "
        f"ours {chains} chains {rate['batched']:.1f} positions/s; "
        f"speed-up vs naive {values['gibbs.speedup_vs_naive']:.2f}x, "
        f"head only {values['gibbs.speedup_head_only']:.2f}x, batched {values[f'gibbs.speedup_batched{chains}']:.2f}x"
    )
    return values
