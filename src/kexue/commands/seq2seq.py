"""``kexue seq2seq build-corpus / train / generate / eval``: synchronous bidirectional decoding (article 3).

Thin entry points: each has the signature the CLI parses, calls the recipe of the same name in
:mod:`kexue.recipes.seq2seq` with its arguments (the recipe validates them before any work) and
prints a summary. Python callers use the recipes directly.
"""

from __future__ import annotations

from pathlib import Path

from kexue.params import Device, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from kexue.recipes import seq2seq as recipe
from kexue.recipes.seq2seq import Decoding, Scoring, Seq2SeqSettings, Split


def build_corpus(
    out: Path,
    mirror: str = "http://deb.debian.org/debian",
    suite: str = "bookworm",
    work: Path | None = None,
    offline: bool = False,
    manpages: bool = True,
    seed: NonNegativeInt = 0,
) -> dict:
    """Rebuild the debian-en and debian-zh corpora from Debian's archive (needs network and apt).

    The committed snapshots need neither; this remakes them (or newer ones) with their provenance.

    Args:
        out: folder for <name>.jsonl.xz and <name>.json.
        mirror: Debian mirror.
        suite: Debian suite (the committed snapshots: bookworm).
        work: keep the private apt folder here (default: a temporary one).
        offline: read the indexes already in --work; run no apt.
        manpages: add the manpages-zh pairs to debian-zh.
        seed: seed of the split by source package.
    Returns:
        The provenance of each snapshot, by name.
    """
    built = recipe.build_corpus(out, mirror, suite, work, offline, manpages, seed)
    for name, meta in built.items():
        print(f"{name}: {meta['counts']} ({meta['total']} pairs) -> {Path(out) / (name + '.jsonl.xz')}")
    return built


def train(
    corpus: str = "debian-en",
    settings: Seq2SeqSettings = Seq2SeqSettings(),
    threads: PositiveInt | None = None,
    device: Device = "auto",
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> Path:
    """Train the bidirectional title model and its L2R-only and R2L-only baselines (same size, same budget).

    Args:
        corpus: debian-en, debian-zh, or a .tsv (source<TAB>target[<TAB>group]) / .jsonl file of pairs.
        settings: tokenizer, model and training settings (--settings.dim 128, --settings.steps 4000, ...).
        threads: torch CPU threads (default: torch's choice).
        device: auto, cpu, cuda, cuda:N or mps.
        results: also merge the valid losses into this results JSON.
        resume: continue each model from its last checkpoint in --out (settings.steps, .lr, .eval_every,
            .eval_pairs, threads, device and results may change; anything else is refused).
        overwrite: replace the run in a non-empty --out.
        out: run folder (default runs/seq2seq-train-<time>).
    Returns:
        The run folder (tokenizer.json, l2r/, r2l/, bidirectional/, results.json).
    """
    run = recipe.train_seq2seq(corpus, settings, threads, device, results, resume, overwrite, out)
    # named as in the figures (the λ = 0 control's third model is `shared`)
    losses = ", ".join(f"{f.key.removeprefix('seq2seq.valid_ce.')} {f.value:.3f}" for f in run.figures)
    dropped = (
        f" ({run.left_out} more left out: a target empty or over --settings.max_target_tokens "
        f"{settings.max_target_tokens})"
        if run.left_out
        else ""
    )
    print(
        f"seq2seq: {run.pairs} pairs{dropped}, {run.tokenizer} tokenizer, {run.steps} steps per model in "
        f"{run.seconds:.0f} s; valid loss {losses} -> {run.out}"
    )
    return run.out


def generate(
    run: Path,
    text: str | None = None,
    file: Path | None = None,
    decoding: Decoding = "bidirectional",
    beam: PositiveInt = 4,
    scoring: Scoring = "su",
    length_penalty: NonNegativeFloat = 0.0,
    max_new_tokens: PositiveInt | None = None,
    min_length: NonNegativeInt = 0,
    no_repeat_ngram: NonNegativeInt = 0,
    repetition_penalty: PositiveFloat = 1.0,
    batch_size: PositiveInt = 32,
    threads: PositiveInt | None = None,
    device: Device = "auto",
) -> list[str]:
    """Titles for a text (--text) or a file of texts, one a line (--file).

    Prints a line per text: the title, a tab, then in brackets the direction whose hypothesis won (l2r or
    r2l; R2L titles are read back left to right) and ", cut at the cap" when no end token came before
    --max_new_tokens.

    Args:
        run: folder written by `kexue seq2seq train`.
        text: the text to summarise in a title.
        file: a UTF-8 file of texts, one a line (instead of --text).
        decoding: l2r or r2l (that baseline's beam search) or bidirectional (both streams in lockstep).
        beam: beam size (per direction with --scoring su; in all with --scoring half).
        scoring: su (k² pairs, Su's averaged scoring) or half (the paper's half-and-half beam).
        length_penalty: scores are sum log p / length ** length_penalty (0: Su's setting).
        max_new_tokens: cap on generated tokens, eos included (default: the run's max_target_tokens + 1).
        min_length: no eos before this many tokens.
        no_repeat_ngram: forbid repeating n-grams of this size (0: off).
        repetition_penalty: make tokens already generated less likely by this factor (CTRL; 1: off).
        batch_size: texts decoded together.
        threads: torch CPU threads.
        device: auto, cpu, cuda, cuda:N or mps.
    Returns:
        The titles.
    """
    titles = recipe.generate(
        run,
        text,
        file,
        decoding,
        beam,
        scoring,
        length_penalty,
        max_new_tokens,
        min_length,
        no_repeat_ngram,
        repetition_penalty,
        batch_size,
        threads,
        device,
    )
    for t in titles:
        print(f"{t.text}\t[{t.direction}{'' if t.finished else ', cut at the cap'}]")
    return [t.text for t in titles]


def evaluate(
    run: Path,
    split: Split = "test",
    beam: PositiveInt = 4,
    scoring: Scoring = "su",
    length_penalty: NonNegativeFloat = 0.0,
    max_new_tokens: PositiveInt | None = None,
    max_pairs: PositiveInt | None = None,
    batch_size: PositiveInt = 32,
    latency_pairs: PositiveInt = 64,
    examples: NonNegativeInt = 5,
    threads: PositiveInt | None = None,
    device: Device = "auto",
    results: Path | None = None,
) -> dict[str, float]:
    """ROUGE-1/2/L, BLEU, first/last-4-token accuracy and latency of the L2R, R2L and bidirectional decoders.

    All three decode the split at the same beam; the figures are merged into RUN/results.json.

    Args:
        run: folder written by `kexue seq2seq train`.
        split: test, valid or train.
        beam: beam size of every decoder (per direction with --scoring su; in all with --scoring half).
        scoring: su (k² pairs, Su's averaged scoring) or half (the paper's half-and-half beam).
        length_penalty: scores are sum log p / length ** length_penalty (0: Su's setting).
        max_new_tokens: cap on generated tokens, eos included (default: the run's max_target_tokens + 1).
        max_pairs: evaluate the first N pairs of the split only (default: all).
        batch_size: sources decoded together.
        latency_pairs: sources of the latency measurement (the first of the split).
        examples: example titles printed and saved in RUN/eval-<split>.json.
        threads: torch CPU threads.
        device: auto, cpu, cuda, cuda:N or mps.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/seq2seq.json).
    Returns:
        Flat mapping seq2seq.<metric>.<decoder> -> value.
    """
    ev = recipe.evaluate_seq2seq(
        run,
        split,
        beam,
        scoring,
        length_penalty,
        max_new_tokens,
        max_pairs,
        batch_size,
        latency_pairs,
        examples,
        threads,
        device,
        results,
    )
    v = ev.values()
    third = "bidirectional" if "seq2seq.rougeL.bidirectional" in v else "shared"  # shared: the λ = 0 control
    for name in ("l2r", "r2l", third):
        print(
            f"{name:>13}: ROUGE-1 {v[f'seq2seq.rouge1.{name}']:.2f}  ROUGE-2 {v[f'seq2seq.rouge2.{name}']:.2f}  "
            f"ROUGE-L {v[f'seq2seq.rougeL.{name}']:.2f}  BLEU {v[f'seq2seq.bleu.{name}']:.2f}  "
            f"first-4 {v[f'seq2seq.first4_acc.{name}']:.3f}  last-4 {v[f'seq2seq.last4_acc.{name}']:.3f}"
        )
    ratios = ", ".join(
        f"{k.rsplit('.', 1)[1]} {x:.2f}x"
        for k, x in v.items()
        if k.startswith("seq2seq.latency_ratio_") and k.count(".") == 2
    )
    print(f"latency {third} / L2R (beam {beam}, batch {batch_size}): {ratios}")
    for line in recipe.iter_examples(ev):
        print(line)
    return v
