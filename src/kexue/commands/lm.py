"""``kexue lm train / generate / termination``: word-level LMs and the non-termination study (article 5).

Thin entry points: each has the signature the CLI parses, calls the recipe of the same name in
:mod:`kexue.recipes.lm` with its arguments (the recipe validates them before any work) and prints
a summary. Python callers use the recipes directly.
"""

from __future__ import annotations

from pathlib import Path

from kexue.params import NonNegativeInt, PositiveInt
from kexue.recipes import lm as recipe
from kexue.recipes.lm import DECODERS, DecoderName, LMTrainSettings


def train(
    corpus: str = "ptb",
    settings: LMTrainSettings = LMTrainSettings(),
    threads: PositiveInt | None = None,
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> Path:
    """Train a word-level LM (vanilla or self-terminating) on PTB through the shared fit().

    Args:
        corpus: "ptb" or a folder with train.txt / valid.txt / test.txt.
        settings: model and training settings (--settings.head st, --settings.dim 512, --settings.steps 400,
            --settings.batching sentence, --settings.patience 3, ...).
        threads: torch CPU threads (default: torch's choice).
        results: also merge the test perplexity into this results JSON.
        resume: continue from the last checkpoint in --out (settings.steps, .lr, .eval_every, .eval_tokens,
            .patience, threads and results may change; anything else is refused).
        overwrite: replace the run in a non-empty --out.
        out: run folder (default runs/lm-train-<time>).
    Returns:
        The run folder (model.safetensors, model.json, vocab.json, results.json).
    """
    run = recipe.train_lm(corpus, settings, threads, results, resume, overwrite, out)
    loss = f", train loss {run.train_loss:.3f}" if run.train_loss is not None else ""
    kept = f", kept the weights of step {run.best_step} (best valid)" if run.best_step is not None else ""
    print(
        f"lm {settings.arch}/{settings.head}: {run.steps} steps in {run.seconds:.0f} s{loss}{kept}, "
        f"test perplexity {run.test_ppl:.1f} -> {run.out}"
    )
    return run.out


def generate(
    run: Path,
    prompt: str,
    decoder: DecoderName = "greedy",
    max_new_tokens: PositiveInt = 50,
    samples: PositiveInt = 1,
    seed: NonNegativeInt = 0,
) -> list[str]:
    """Continue a prompt with a trained LM.

    Args:
        run: folder written by `kexue lm train`.
        prompt: words to continue (space separated, PTB style).
        decoder: one of greedy, beam2, beam4, topk (top-2), topk4, topp (nucleus-0.2), topp04, consistent_topk,
            consistent_topp, ancestral.
        max_new_tokens: cap on generated tokens.
        samples: continuations to draw (sampling decoders).
        seed: seed of the sampling generator.
    Returns:
        The continuations as text.
    """
    continuations = recipe.generate(run, prompt, decoder, max_new_tokens, samples, seed)
    for c in continuations:
        print(f"{prompt} | {c.text}  [{c.reason}, {c.tokens} tokens]")
    return [c.text for c in continuations]


def termination(
    models: str,
    decoders: str = ",".join(DECODERS),
    prefixes: PositiveInt = 200,
    cap: PositiveInt = 1500,
    corpus: str = "ptb",
    seed: NonNegativeInt = 0,
    chunk: PositiveInt = 100,
    threads: PositiveInt | None = None,
    results: Path | None = None,
    overwrite: bool = False,
    out: Path | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """The non-termination study (Welleck et al. 2020): each model x decoder on 10-word PTB test prefixes.

    Every run folder, the decoders and the corpus are checked before any model is loaded. The
    decoders: greedy, beam2, beam4, topk (top-2), topk4, topp (nucleus-0.2), topp04, consistent_topk,
    consistent_topp, ancestral; "ST greedy" is greedy on a self-terminating model. 1,000 prefixes
    take 2 to 35 minutes per decoder for a dim-512 LSTM on 1 CPU thread (see the recipe).

    Args:
        models: comma-separated name=run_folder pairs, e.g. vanilla=runs/lm-va,st=runs/lm-st.
        decoders: comma-separated decoders (default: all ten).
        prefixes: number of test prefixes (one continuation each; the paper's ratios need 1,000).
        cap: the length cap L on generated tokens.
        corpus: "ptb" or a folder with test.txt.
        seed: seed of the sampling generator.
        chunk: model rows decoded together (a beam of K takes K rows per prefix).
        threads: torch CPU threads.
        results: also write the figures to this results JSON (e.g. benchmarks/results/termination.json).
        overwrite: replace what a non-empty --out holds.
        out: run folder (default runs/lm-termination-<time>).
        resume: continue the study in --out (same settings): the model x decoder pairs already in
            its results.json are read back, the others decoded (each lands there as it is measured).
    Returns:
        Flat mapping termination.<model>.<decoder>.<metric> and termination.<model>.{ppl,test_ppl}.
    """
    study = recipe.termination_study(
        models, decoders, prefixes, cap, corpus, seed, chunk, threads, results, overwrite, out, resume
    )
    n_models, n_decoders = len(recipe.parse_models(models)), len(recipe.parse_decoders(decoders))
    print(f"termination: {n_models} models x {n_decoders} decoders, {prefixes} prefixes, cap {cap} -> {study.out}")
    return study.values()
