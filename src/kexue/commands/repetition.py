"""``kexue repetition theory / measure / rebalance`` (kexue.fm/archives/8128).

Thin entry points: each has the signature the CLI parses, calls the recipe of the same name in
:mod:`kexue.recipes.repetition` with its arguments (the recipe validates them, makes the run folder
and writes its files) and prints a table. Python callers use the recipes directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kexue.params import NonNegativeInt, OpenUnitInterval, PositiveInt
from kexue.recipes import repetition as recipe


def theory(
    matrix: Path | None = None,
    corpus: str = "ptb",
    level: Literal["char", "word", "rebalanced"] = "char",
    decoders: str = "sample,top_p:0.9,top_k:10,greedy",
    max_sentences: PositiveInt | None = None,
    word_vocab: PositiveInt | None = None,
    simulate: NonNegativeInt = 0,
    seed: NonNegativeInt = 0,
    out: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Exact repetition probability R = Σ_k Tr((P∘P)^k) of a bigram chain under each decoder.

    Args:
        matrix: a transition matrix file (.npy, .npz, .csv, .txt; rows sum to at most 1, the rest
            is eos); otherwise the bigram chain of ``corpus``.
        corpus: ``ptb`` or a folder with train.txt (one sentence per line).
        level: ``char``, ``word`` or ``rebalanced`` (characters after rebalanced encoding).
        decoders: comma-separated: sample, greedy, top_k:K, top_p:P, temp:T (combine with +).
        max_sentences: use only the first sentences of the corpus.
        word_vocab: at word level, keep the most frequent words (the rest become <unk>).
        simulate: if > 0, also simulate this many chains per decoder and compare with R.
        seed: seed of the simulation.
        out: run folder (default runs/repetition-theory-<time>/).
        overwrite: replace an existing run folder ``out``.
    Returns:
        The path of theory.json.
    """
    result = recipe.theory(matrix, corpus, level, decoders, max_sentences, word_vocab, simulate, seed, out, overwrite)
    print(f"bigram chain: {result.source}, n = {result.n}")
    print(f"{'decoder':>16} {'zeta':>9} {'lambda_1':>9} {'bounds':>19} {'R':>11}  simulated")
    for name, r in result.rows.items():
        R = f"{r['R']:.5g}" if r["R"] is not None else "diverges"
        extra = f"{r['R_mc']:.5g} ± {r['R_mc_stderr']:.2g} ({r['mc_rel_error']:+.2%})" if "R_mc" in r else ""
        if "cycle_fraction" in r:
            extra = f"{r['cycle_fraction']:.1%} of start tokens cycle, e.g. {r['example_cycle'][:6]}"
        print(
            f"{name:>16} {r['zeta']:9.3g} {r['lambda_1']:9.4g} [{r['lambda_lower']:.3g}, {r['lambda_upper']:.3g}]"
            f"{R:>12}  {extra}"
        )
    print(f"wrote {result.path}")
    return result.path


def measure(
    texts: Path | None = None,
    unit: Literal["word", "char"] = "word",
    corpus: str = "ptb",
    level: Literal["char", "word", "rebalanced"] = "word",
    decoders: str = "sample,top_p:0.9,top_k:10,top_k:3,greedy",
    samples: PositiveInt = 500,
    max_length: PositiveInt = 100,
    max_sentences: PositiveInt | None = None,
    word_vocab: PositiveInt | None = None,
    seed: NonNegativeInt = 0,
    out: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Repetition metrics (rep-w, rep-r, seq-rep-4, distinct-n, loops) of texts or of bigram decoders.

    Args:
        texts: a UTF-8 file of generated texts, one per line; without it, sentences are sampled from
            the bigram chain of ``corpus`` under each decoder and measured, beside held-out text.
        unit: how a line of ``texts`` splits into tokens: word or char.
        corpus: ``ptb`` or a folder with train.txt / valid.txt.
        level: char, word or rebalanced: the units of the bigram chain.
        decoders: comma-separated decoders (sample, greedy, top_k:K, top_p:P, temp:T).
        samples: sentences per decoder.
        max_length: token limit per sampled sentence.
        max_sentences: use only the first sentences of the corpus.
        word_vocab: at word level, keep the most frequent words.
        seed: sampling seed.
        out: run folder (default runs/repetition-measure-<time>/).
        overwrite: replace an existing run folder ``out``.
    Returns:
        The path of metrics.json.
    """
    result = recipe.measure(
        texts, unit, corpus, level, decoders, samples, max_length, max_sentences, word_vocab, seed, out, overwrite
    )
    cols = ["rep_w", "rep_r", "seq_rep_4", "distinct_2", "loop_fraction", "loop_at_end_fraction", "mean_length"]
    print(f"{'':>16} " + " ".join(f"{c:>12}" for c in cols))
    for name, m in result.table.items():
        print(f"{name[-16:]:>16} " + " ".join(f"{m[c]:12.4g}" for c in cols))
    print(f"wrote {result.path}")
    return result.path


def rebalance(
    corpus: str = "ptb",
    level: Literal["char", "word"] = "char",
    threshold: OpenUnitInterval = 0.1,
    iterations: PositiveInt = 10,
    encoding: Path | None = None,
    apply: Path | None = None,
    max_sentences: PositiveInt | None = None,
    out: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Learn a rebalanced encoding (merge pairs with P(b|a) > threshold, repeat) or apply one.

    Args:
        corpus: ``ptb`` or a folder with train.txt / valid.txt: where to learn the merges.
        level: the units merged: char (characters, joiner "") or word (words, joiner "_").
        threshold: merge pairs whose add-one bigram probability exceeds it (paper: 0.1).
        iterations: merge rounds at most (paper: 10).
        encoding: an encoding.json (of an earlier run) to load instead of learning one.
        apply: a UTF-8 text file (one sentence per line) to encode into ``encoded.jsonl``.
        max_sentences: learn from the first sentences only.
        out: run folder (default runs/repetition-rebalance-<time>/).
        overwrite: replace an existing run folder ``out``.
    Returns:
        The path of encoding.json.
    """
    result = recipe.rebalance(corpus, level, threshold, iterations, encoding, apply, max_sentences, out, overwrite)
    summary = result.summary
    if result.encoded is not None:
        print(f"encoded {result.encoded_lines} lines into {result.encoded}")
    before, after = summary["before"], summary["after"]
    print(
        f"merge rounds: {summary['rounds']} -> {summary['merged_tokens']} merged tokens; "
        f"{summary['tokens_per_unit']:.3f} tokens per {level} on valid"
    )
    print(f"exact round trips on valid: {summary['valid_round_trips']}/{summary['valid_sentences']}")
    print(f"example: {summary['example']}")
    for when, a in (("before:", before), ("after: ", after)):
        print(
            f"sampling chain {when} n={a['n']} λ_1={a['lambda_1']:.4g} mean Σ_j P_ij²={a['mean_concentration']:.4g} "
            f"R={a['R']:.4g}"
        )
    print(f"wrote {result.path}")
    return result.path
