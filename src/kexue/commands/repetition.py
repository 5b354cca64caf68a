"""``kexue repetition theory / measure / rebalance`` (kexue.fm/archives/8128).

Entry points only: validate the flags, call :mod:`kexue.recipes.repetition`, print a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from kexue.analysis.text import repetition_metrics
from kexue.checks import check_new_run_dir
from kexue.data.levels import check_corpus_folder
from kexue.data.text import load_corpus
from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError
from kexue.io import make_run_dir, read_text, write_json, write_text
from kexue.params import NonNegativeInt, OpenUnitInterval, PositiveInt
from kexue.recipes.repetition import (
    chain_and_held_out,
    corpus_chain,
    decoder_names,
    decoder_table,
    learn_encoding,
    load_chain,
    metrics_table,
    rebalance_summary,
    units,
)


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
    config = dict(locals())
    names = decoder_names(decoders)
    check_new_run_dir(out, overwrite)
    if matrix is None:
        check_corpus_folder(corpus, ("train",))
        chain, info = corpus_chain(corpus, level, max_sentences, word_vocab)
        P, tokens = chain.P, chain.tokens
    else:
        P = load_chain(matrix)
        tokens, info = [str(i) for i in range(P.shape[0])], {"matrix": str(matrix)}
    run = make_run_dir(out, "repetition-theory", config, overwrite=overwrite)
    rows = decoder_table(P, names, tokens, simulate=simulate, seed=seed)
    path = write_json(run / "theory.json", {"source": info, "n": P.shape[0], "decoders": rows})
    print(f"bigram chain: {info}, n = {P.shape[0]}")
    print(f"{'decoder':>16} {'zeta':>9} {'lambda_1':>9} {'bounds':>19} {'R':>11}  simulated")
    for name, r in rows.items():
        R = f"{r['R']:.5g}" if r["R"] is not None else "diverges"
        extra = f"{r['R_mc']:.5g} ± {r['R_mc_stderr']:.2g} ({r['mc_rel_error']:+.2%})" if "R_mc" in r else ""
        if "cycle_fraction" in r:
            extra = f"{r['cycle_fraction']:.1%} of start tokens cycle, e.g. {r['example_cycle'][:6]}"
        print(
            f"{name:>16} {r['zeta']:9.3g} {r['lambda_1']:9.4g} [{r['lambda_lower']:.3g}, {r['lambda_upper']:.3g}]"
            f"{R:>12}  {extra}"
        )
    print(f"wrote {path}")
    return path


def _read_texts(path: Path, unit: str, flag: str) -> list[list[str]]:
    """Non-empty lines of a user's UTF-8 text file, split into words or characters."""
    lines = read_text(path, f"{flag} file").splitlines()
    texts = [line.split() if unit == "word" else list(line) for line in lines if line.strip()]
    if not texts:
        raise KexueError(f"{flag} {path} holds no text (no non-empty line)")
    return texts


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
    config = dict(locals())
    names = decoder_names(decoders) if texts is None else []
    check_new_run_dir(out, overwrite)
    if texts is not None:
        lines = _read_texts(texts, unit, "--texts")
        run = make_run_dir(out, "repetition-measure", config, overwrite=overwrite)
        table = {str(texts): repetition_metrics(lines)}
    else:
        check_corpus_folder(corpus, ("train", "valid"))
        chain, held = chain_and_held_out(corpus, level, samples, max_sentences, word_vocab)
        run = make_run_dir(out, "repetition-measure", config, overwrite=overwrite)
        table = metrics_table(chain, names, samples, max_length, seed=seed, held_out=held)
    path = write_json(run / "metrics.json", table)
    cols = ["rep_w", "rep_r", "seq_rep_4", "distinct_2", "loop_fraction", "loop_at_end_fraction", "mean_length"]
    print(f"{'':>16} " + " ".join(f"{c:>12}" for c in cols))
    for name, m in table.items():
        print(f"{name[-16:]:>16} " + " ".join(f"{m[c]:12.4g}" for c in cols))
    print(f"wrote {path}")
    return path


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
    config = dict(locals())
    check_new_run_dir(out, overwrite)
    enc = RebalancedEncoding.load(encoding) if encoding is not None else None
    lines = _read_texts(apply, level, "--apply") if apply is not None else None
    check_corpus_folder(corpus, ("train", "valid"))
    train = units(load_corpus(corpus, "train")[:max_sentences], level)
    valid = units(load_corpus(corpus, "valid"), level)
    if not train or not valid:
        raise KexueError(f"--corpus {corpus}: {'train' if not train else 'valid'}.txt holds no sentence")
    run = make_run_dir(out, "repetition-rebalance", config, overwrite=overwrite)
    if enc is None:
        enc = learn_encoding(train, level, threshold, iterations)
    path = enc.save(run / "encoding.json")
    summary = rebalance_summary(enc, train, valid)
    write_json(run / "summary.json", summary)
    if lines is not None:
        write_text(run / "encoded.jsonl", "".join(json.dumps(enc.encode(s)) + "\n" for s in lines))
        print(f"encoded {len(lines)} lines into {run / 'encoded.jsonl'}")
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
    print(f"wrote {path}")
    return path
