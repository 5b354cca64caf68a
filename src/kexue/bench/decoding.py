"""``kexue bench decoding``: our decode loop vs transformers ``generate`` on the same model.

A random-init GPT-2-shape model (built offline from a config) continues the same prompts with
greedy, beam-4 and top-p decoding, both ways, interleaved in one run so that the ratios see
the same machine load. Speed-up = HF time / our time (median over repeats); parity = share of
rows whose tokens are identical (greedy, beam; top-p up to the first eos, :func:`token_parity`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from kexue.bench.common import copy_file
from kexue.checks import check_new_run_dir, check_results_file, comma_names, require_modules
from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, Sample, Stopping, TopP, decode
from kexue.generation.hf import HFStep
from kexue.io import check_output_file, make_run_dir, write_json
from kexue.params import NonNegativeInt, PositiveInt, check, set_threads
from kexue.progress import progress
from kexue.provenance import command_line, describe_machine, machine_facts
from kexue.results import Figure, write_results

MODES = ("greedy", "beam4", "top_p")
POSITIONS = 1024  # GPT-2's learned positions
# The project's goals for the speed-up over HF generate (not published figures): kept in the
# details JSON beside the measurement, never in a results row's `published`.
TARGETS = {"speedup_vs_hf": {"greedy": 1.2, "beam4": 1.2, "top_p": 1.2}}  # issue 16


def build_gpt2(layers: int, width: int, heads: int, vocab: int, seed: int):
    """A random-init GPT-2 LM head model of the given shape (no download)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise KexueError("the decoding benchmark needs transformers (pip install 'kexue[hf]')") from None
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=POSITIONS)
    return GPT2LMHeadModel(cfg).eval()


def run_ours(model, prompt, mode: str, new_tokens: int, eos: int, seed: int):
    procs, search = {"greedy": ([], Greedy()), "beam4": ([], Beam(4, 1.0, False)), "top_p": ([TopP(0.9)], Sample())}[
        mode
    ]
    out = decode(HFStep(model), prompt, procs, search, Stopping(new_tokens, eos), torch.Generator().manual_seed(seed))
    return out.tokens


def cache_copy_share(model, prompt, new_tokens: int, eos: int) -> float | None:
    """Beam-4's cache copying: the positions our reorders copy (first layer, every step) over those
    a whole-past gather of the same rows copies (what ``reorder_cache`` does; ``generate`` also keeps
    the rows of decided prompts, so against it the share is at most this). An untimed run of its own;
    None when the step keeps transformers' own cache (transformers < 5), which has no such count."""
    step = HFStep(model)
    if step.cache != "inplace":
        return None
    counts = [0, 0]

    def reorder(state, index):
        buf = state.cache[0] if isinstance(state.cache, list) else state.cache.layers[0].buf
        before = buf.length * len(index)
        state = state.reorder(index)
        counts[0] += buf.copied
        counts[1] += before
        return state

    decode(step, prompt, [], Beam(4, 1.0, False), Stopping(new_tokens, eos), reorder=reorder)
    return counts[0] / counts[1] if counts[1] else 0.0


def run_hf(model, prompt, mode: str, new_tokens: int, eos: int, seed: int):
    kw = {
        "greedy": {"do_sample": False},
        "beam4": {"do_sample": False, "num_beams": 4, "length_penalty": 1.0, "early_stopping": False},
        "top_p": {"do_sample": True, "top_p": 0.9, "top_k": 0, "temperature": 1.0},
    }[mode]
    torch.manual_seed(seed)
    seqs = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        pad_token_id=eos,
        eos_token_id=eos,
        **kw,
    )
    return seqs[:, prompt.shape[1] :]


@torch.no_grad()
def decoding(
    layers: PositiveInt = 6,
    width: PositiveInt = 384,
    heads: PositiveInt = 6,
    vocab: PositiveInt = 50257,
    batch: PositiveInt = 8,
    prompt_len: PositiveInt = 16,
    new_tokens: PositiveInt = 128,
    repeats: PositiveInt = 3,
    modes: str = ",".join(MODES),
    grid: str | None = None,
    threads: PositiveInt | None = 1,
    seed: NonNegativeInt = 0,
    results: Path | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    details: Path | None = None,
) -> dict[str, float]:
    """Tokens/s of kexue's decode loop vs ``model.generate``, same model, same prompts, one run.

    Writes ``results.json`` (results schema) and ``timings.json`` (every timed run, the measured
    machine facts, the project's targets) into the run folder ``out``; nothing outside it unless
    ``results`` names a results JSON to merge the figures into, where each mode lands as soon as
    it is measured, or ``details`` a path to copy ``timings.json`` to (to commit a run: ``--results
    benchmarks/results/decoding.json --details benchmarks/results/decoding_details.json``).

    Args:
        layers: GPT-2 layers.
        width: hidden width (a multiple of ``heads``).
        heads: attention heads.
        vocab: vocabulary size (GPT-2's 50257 by default).
        batch: prompts decoded together.
        prompt_len: prompt tokens.
        new_tokens: tokens generated per prompt (``prompt_len + new_tokens`` at most 1024, GPT-2's positions).
        repeats: timed runs per method and mode (median taken), interleaved ours / HF.
        modes: comma-separated subset of greedy, beam4, top_p.
        grid: more cells to measure after the main one, comma-separated ``BATCHxNEW_TOKENS``
            (e.g. ``1x128,8x512``: one prompt alone; long generations, where per-step costs grow);
            each cell's figures are keyed ``decoding.<figure>.b<BATCH>_n<NEW>.<mode>``, the main
            cell's keep their plain keys.
        threads: torch CPU threads for both (None: torch's default).
        seed: model, prompt and sampling seed.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/decoding.json).
        out: run folder (default runs/bench-decoding-<time>/).
        overwrite: replace an existing run folder ``out``.
        details: also copy the run's timings.json (with the machine facts) here.
    Returns:
        decoding.speedup_vs_hf.<mode>, decoding.parity.<mode>, decoding.tokens_per_s.<ours|hf>.<mode>,
        decoding.cache_copy_share.beam4 (:func:`cache_copy_share`, from an untimed run) (and the same
        with ``.b<BATCH>_n<NEW>`` before ``.<mode>`` for each ``grid`` cell).
    """
    arguments = dict(locals())  # the call as made: its command line and config.yaml
    names = comma_names(modes, MODES, "--modes")
    cells = [(batch, new_tokens, "")] + [(b, n, f"b{b}_n{n}.") for b, n in parse_grid(grid)]
    check(width % heads == 0, f"--width {width} must be a multiple of --heads {heads}")
    for _, n, _ in cells:
        check(
            prompt_len + n <= POSITIONS,
            f"--prompt_len + new tokens = {prompt_len + n} exceeds the model's {POSITIONS} positions",
        )
    check_new_run_dir(out, overwrite)
    check_results_file(results)
    check_output_file(details, "--details")
    require_modules(("transformers", "pip install 'kexue[hf]'"))
    out = make_run_dir(out, "bench-decoding", arguments, overwrite=overwrite)
    set_threads(threads)
    machine = machine_facts()  # before the work: the load average is other jobs', not ours
    model = build_gpt2(layers, width, heads, vocab, seed)
    eos = model.config.eos_token_id
    prompts = torch.randint(
        0, vocab, (max(b for b, _, _ in cells), prompt_len), generator=torch.Generator().manual_seed(seed)
    )
    cmd = command_line("bench decoding", decoding, arguments)
    figures, raw = [], {}
    bar = progress(total=len(cells) * len(names) * (repeats + 1) * 2, desc="bench decoding")
    for cell_batch, cell_new, tag in cells:
        prompt = prompts[:cell_batch]
        for mode in names:
            for f in (run_ours, run_hf):  # warm-up (allocator, lazy init)
                f(model, prompt[:2], mode, 4, eos, seed)
                bar.update(1)
            times = {"ours": [], "hf": []}
            toks = {}
            for r in range(repeats):
                order = [("ours", run_ours), ("hf", run_hf)] if r % 2 == 0 else [("hf", run_hf), ("ours", run_ours)]
                for who, f in order:
                    t0 = time.perf_counter()
                    toks[who] = f(model, prompt, mode, cell_new, eos, seed)
                    times[who].append(time.perf_counter() - t0)
                    bar.update(1)
            med = {k: statistics.median(v) for k, v in times.items()}
            generated = cell_batch * cell_new
            speedup = med["hf"] / med["ours"]
            key = f"{tag}{mode}"
            new_figures = [Figure(f"decoding.speedup_vs_hf.{key}", speedup, command=cmd)]
            for who in ("ours", "hf"):
                new_figures.append(Figure(f"decoding.tokens_per_s.{who}.{key}", generated / med[who], command=cmd))
            parity = token_parity(toks["ours"], toks["hf"], eos, sampled=mode == "top_p")
            new_figures.append(Figure(f"decoding.parity.{key}", parity, command=cmd))
            share = cache_copy_share(model, prompt, cell_new, eos) if mode == "beam4" else None
            if share is not None:
                new_figures.append(Figure(f"decoding.cache_copy_share.{key}", share, command=cmd))
            figures += new_figures
            raw[key] = {"batch": cell_batch, "new_tokens": cell_new, "seconds": times, "median": med}
            if results is not None:  # each measurement lands as soon as it is made
                write_results(results, new_figures, merge=True)
            copies = "" if share is None else f"; the cache copies {share:.1%} of what generate's reorders copy"
            bar.write(
                f"{key:>14}: ours {generated / med['ours']:.1f} tok/s, HF {generate_rate(generated, med['hf'])} tok/s, "
                f"speed-up {speedup:.2f}x (batch {cell_batch}, {cell_new} new tokens){copies}"
            )
    bar.close()
    write_json(out / "timings.json", {"machine": machine, "command": cmd, "targets": TARGETS, "raw": raw})
    write_results(out / "results.json", figures)
    if details is not None:
        copy_file(out / "timings.json", details)
    print(f"measured on {describe_machine(machine)}")
    flat = {f.key: f.value for f in figures}
    print(
        "decoding bench: "
        + ", ".join(f"{k.split('.', 1)[1]} {v:.3g}" for k, v in flat.items() if "speedup" in k or "parity" in k)
    )
    return flat


def token_parity(ours: torch.Tensor, hf: torch.Tensor, eos: int, sampled: bool = False) -> float:
    """Share of rows whose generated tokens are identical (1.0: the whole batch).

    ``sampled``: our generator and HF's global one start from the same seed, and :class:`Sample`
    draws what ``torch.multinomial`` inside ``generate`` draws (one exponential per vocabulary entry
    and row), so the sampled tokens match, until the first eos anywhere in the batch: then our
    decode drops the finished row while ``generate`` keeps drawing for it, and the two random streams
    part. The comparison stops at that step (both sides must have emitted the same tokens up to it).
    """
    if sampled:
        ended = (ours == eos).any(0).nonzero()
        ended_hf = (hf == eos).any(0).nonzero()
        steps = [int(e[0]) + 1 for e in (ended, ended_hf) if len(e)]
        stop = min(steps + [ours.shape[1], hf.shape[1]])
        ours, hf = ours[:, :stop], hf[:, :stop]
    if ours.shape != hf.shape:
        return 0.0
    return float((ours == hf).all(1).double().mean())


def parse_grid(grid: str | None) -> list[tuple[int, int]]:
    """``"1x128,8x512"`` -> ``[(1, 128), (8, 512)]``; a malformed cell is a KexueError naming ``--grid``."""
    if grid is None or not grid.strip():
        return []
    cells = []
    for cell in grid.split(","):
        parts = cell.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
            raise KexueError(f"--grid: {cell.strip()!r} is not BATCHxNEW_TOKENS with positive integers (e.g. 1x128)")
        cells.append((int(parts[0]), int(parts[1])))
    return cells


def generate_rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.1f}"
