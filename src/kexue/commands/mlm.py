"""``kexue mlm train / gibbs``: a masked LM and pseudo-Gibbs text from it (article 6, kexue.fm/archives/8119).

Thin entry points: each has the signature the CLI parses, calls the recipe in
:mod:`kexue.recipes.mlm` with its arguments (the recipe validates them before any work) and
prints a summary. Python callers use the recipes directly.
"""

from __future__ import annotations

from pathlib import Path

from kexue.params import ClosedUnitInterval, NonNegativeInt, PositiveFloat, PositiveInt
from kexue.recipes import mlm as recipe
from kexue.recipes.mlm import MLMTrainSettings, Order


def train(
    corpus: str = "ptb",
    settings: MLMTrainSettings = MLMTrainSettings(),
    threads: PositiveInt | None = None,
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> Path:
    """Fine-tune a masked LM on PTB (default: the MiniLM encoder with a new tied MLM head) through fit().

    Args:
        corpus: "ptb" or a folder with train.txt / valid.txt / test.txt.
        settings: model and training settings (--settings.base minilm|scratch|DIR, --settings.steps 300, ...).
        threads: torch CPU threads (default: torch's choice).
        results: also merge mlm.valid_loss into this results JSON.
        resume: continue from the last checkpoint in --out (settings.steps, .lr, .eval_every may change).
        overwrite: replace the run in a non-empty --out.
        out: run folder (default runs/mlm-train-<time>); it is also a transformers *ForMaskedLM folder.
    Returns:
        The run folder (config.json, model.safetensors, tokenizer.json, model.json, results.json).
    """
    run = recipe.train_mlm(corpus, settings, threads, results, resume, overwrite, out)
    print(
        f"mlm {settings.base}: {run.steps} steps in {run.seconds:.0f} s, "
        f"validation MLM loss {run.valid_loss:.3f} -> {run.out}"
    )
    return run.out


def gibbs(
    model: Path,
    chains: PositiveInt = 16,
    batch: PositiveInt = 16,
    steps: PositiveInt = 200,
    burn_in: NonNegativeInt = 100,
    thin: PositiveInt | None = None,
    order: Order = "random",
    fraction: ClosedUnitInterval = 0.15,
    min_length: PositiveInt = 8,
    max_length: PositiveInt = 32,
    temperature: PositiveFloat = 1.0,
    top_k: PositiveInt | None = None,
    prompt: str | None = None,
    corpus: str | None = None,
    references: PositiveInt = 1000,
    lm: Path | None = None,
    seed: NonNegativeInt = 0,
    label: str | None = None,
    threads: PositiveInt | None = None,
    results: Path | None = None,
    overwrite: bool = False,
    out: Path | None = None,
) -> dict[str, float]:
    """Pseudo-Gibbs samples from a masked LM (not samples of a joint distribution: MLM conditionals need not have one).

    Args:
        model: a `kexue mlm train` run or a transformers *ForMaskedLM folder (with tokenizer.json).
        chains: chains in all (one sample each, more with --thin).
        batch: chains per forward pass.
        steps: steps per chain (one position each; parallel: a share --fraction of them).
        burn_in: first steps, full distribution, states not kept.
        thin: also keep every thin-th state after burn-in (default: only the final state).
        order: random, sequential (left to right) or parallel (not Gibbs: a share redrawn at once).
        fraction: share of positions a parallel step redraws, in (0, 1].
        min_length: shortest sentence in WordPiece tokens.
        max_length: longest sentence in WordPiece tokens.
        temperature: temperature after burn-in.
        top_k: top-k after burn-in (default: the full distribution).
        prompt: a sentence to start from; only its [MASK] tokens are redrawn when it has any (infilling).
        corpus: score BLEU against the test split of "ptb" or a corpus folder (default: no BLEU);
            the same metrics on real test sentences of the same lengths go to gibbs.real_text.*.
        references: test sentences used as references.
        lm: a `kexue lm train` run to score the samples' perplexity.
        seed: seed of the lengths and the chains.
        label: name the figures gibbs.<label>.<metric> (a table of settings in one results file).
        threads: torch CPU threads.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/gibbs.json).
        overwrite: replace what a non-empty --out holds.
        out: run folder (default runs/mlm-gibbs-<time>): samples.txt and results.json.
    Returns:
        Flat mapping gibbs.<metric> -> value.
    """
    run = recipe.sample(
        model, chains, batch, steps, burn_in, thin, order, fraction, min_length, max_length, temperature, top_k,
        prompt, corpus, references, lm, seed, label, threads, results, overwrite, out,
    )  # fmt: skip
    for text in run.samples:
        print(text)
    values = run.values()
    print(
        f"gibbs {order}: {len(run.samples)} samples in {run.seconds:.1f} s; "
        + ", ".join(f"{k[len('gibbs.') :]} {v:.3g}" for k, v in values.items())
        + f" -> {run.out}"
    )
    return values
