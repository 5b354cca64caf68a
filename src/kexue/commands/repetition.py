"""``kexue repetition theory / measure / rebalance`` (kexue.fm/archives/8128)."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from kexue.progress import progress

from kexue.analysis.repetition import (
    analyze,
    as_transition,
    cycle_length_for,
    estimate_bigram,
    greedy_cycles,
    importance_weights,
    named_chain,
    repetition_metrics,
    sample_sequences,
    simulate_repetition,
)
from kexue.bench.common import check_new_run_dir, comma_names
from kexue.bench.repetition import level_sentences
from kexue.data.text import load_corpus
from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError
from kexue.io import make_run_dir, read_text, reading, write_json, write_text
from kexue.params import NonNegativeInt, OpenUnitInterval, PositiveInt

MATRIX_SUFFIXES = (".npy", ".npz", ".csv", ".txt")


def load_matrix(path: Path, flag: str = "--matrix"):
    """A transition matrix from ``.npy`` (dense), ``.npz`` (scipy.sparse.save_npz, or an array named P)
    or ``.csv`` / ``.txt`` (numbers separated by commas or spaces), checked as a chain.

    A chain's rows are probabilities over the tokens; what a row leaves to 1 is the probability
    of eos. So the matrix must be square, non-empty, finite and non-negative, with rows summing to
    at most 1. Anything else (a missing, unreadable or corrupt file too) is one KexueError naming
    the file.
    """
    path = Path(path)
    if path.suffix not in MATRIX_SUFFIXES:
        raise KexueError(f"{flag} {path}: use a .npy, .npz, .csv or .txt file")
    with reading(path, f"{flag} file") as p:
        try:
            if p.suffix == ".npy":
                P = np.load(p, allow_pickle=False)
            elif p.suffix == ".npz":
                P = _load_npz(p, flag)
            else:
                text = read_text(p, f"{flag} file")
                with warnings.catch_warnings():  # an empty file: an empty array, refused below
                    warnings.simplefilter("ignore")
                    P = np.loadtxt(io.StringIO(text), delimiter="," if p.suffix == ".csv" else None, ndmin=2)
        except (ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise KexueError(f"{flag} {path} does not hold a numeric matrix ({first})") from None
    if not sp.issparse(P):
        P = np.asarray(P)
        if P.dtype == bool or not np.issubdtype(P.dtype, np.number) or np.iscomplexobj(P):
            raise KexueError(f"{flag} {path} holds {P.dtype} values, not real numbers")
    try:
        return as_transition(P)
    except KexueError as e:
        raise KexueError(f"{flag} {path}: {e}") from None


def _load_npz(path: Path, flag: str):
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        if {"format", "shape", "data"} <= names:  # scipy.sparse.save_npz
            return sp.load_npz(path)
        if "P" not in names:
            raise KexueError(f"{flag} {path} holds neither a scipy sparse matrix nor an array named P "
                             f"(arrays: {', '.join(sorted(names)) or 'none'})")
        return z["P"]


def _chain(matrix: Path | None, corpus: str, level: str, max_sentences: int | None, word_vocab: int | None):
    if matrix is not None:
        P = load_matrix(matrix)
        n = P.shape[0]
        return P, np.full(n, 1.0 / n), [str(i) for i in range(n)], {"matrix": str(matrix)}
    sents, info = level_sentences(level, corpus, "train", max_sentences=max_sentences, word_vocab=word_vocab)
    chain = estimate_bigram(sents)
    return chain.P, chain.start, chain.tokens, info


def _decoders(decoders: str) -> list[str]:
    """The decoder names of ``--decoders``, each checked (on a one-token chain) before any work."""
    names = comma_names(decoders, None, "--decoders")
    for name in names:
        try:
            named_chain(np.array([[0.5]]), name)
        except KexueError as e:
            raise KexueError(f"--decoders {name}: {e}") from None
    return names


def _check_corpus(corpus: str, splits: tuple[str, ...]) -> None:
    """``ptb`` or a folder holding the named splits (read later through the corpus reader)."""
    if corpus == "ptb":
        return
    folder = Path(corpus)
    if not folder.is_dir():
        raise KexueError(f"--corpus {corpus}: not ptb and not a folder (with {', '.join(s + '.txt' for s in splits)})")
    missing = [f"{s}.txt" for s in splits if not (folder / f"{s}.txt").is_file()]
    if missing:
        raise KexueError(f"--corpus {corpus}: no {' or '.join(missing)} in it")


def theory(matrix: Path | None = None, corpus: str = "ptb", level: Literal["char", "word", "rebalanced"] = "char",
           decoders: str = "sample,top_p:0.9,top_k:10,greedy", max_sentences: PositiveInt | None = None,
           word_vocab: PositiveInt | None = None, simulate: NonNegativeInt = 0, seed: NonNegativeInt = 0,
           out: Path | None = None, overwrite: bool = False) -> Path:
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
    names = _decoders(decoders)
    check_new_run_dir(out, overwrite)
    if matrix is None:
        _check_corpus(corpus, ("train",))
    P, _, tokens, info = _chain(matrix, corpus, level, max_sentences, word_vocab)
    run = make_run_dir(out, "repetition-theory", config, overwrite=overwrite)
    rows = {}
    for name in progress(names, desc="decoders", enabled=len(names) > 1):
        C = named_chain(P, name)
        a = analyze(C)
        row = {k: v for k, v in a.as_dict().items() if k != "deterministic_cycle"}
        row["R"] = a.R if math.isfinite(a.R) else None
        row["R_upper"] = a.R_upper if math.isfinite(a.R_upper) else None
        if not math.isfinite(a.R):
            g = greedy_cycles(C)
            row["cycle_fraction"] = g.cycle_fraction
            row["example_cycle"] = [tokens[i] for i in (a.deterministic_cycle or [])][:20]
        elif simulate > 0 and a.R > 0:
            K = cycle_length_for(C, R=a.R, lam=a.lambda_1)
            root = np.sqrt(np.clip(a.by_token, 0, None))  # start tokens ∝ √r_i (unbiased for any weights)
            q = 0.8 * root / root.sum() + 0.2 * importance_weights(C)
            mc = simulate_repetition(C, simulate, K, seed=seed, start_weights=q, lam=a.lambda_1)
            row.update(R_mc=mc.value, R_mc_stderr=mc.stderr, mc_rel_error=mc.value / a.R - 1,
                       mc_z=mc.z_score(a.R), mc_k_max=K)
        rows[name] = row
    path = write_json(run / "theory.json", {"source": info, "n": P.shape[0], "decoders": rows})
    print(f"bigram chain: {info}, n = {P.shape[0]}")
    print(f"{'decoder':>16} {'zeta':>9} {'lambda_1':>9} {'bounds':>19} {'R':>11}  simulated")
    for name, r in rows.items():
        R = f"{r['R']:.5g}" if r["R"] is not None else "diverges"
        extra = f"{r['R_mc']:.5g} ± {r['R_mc_stderr']:.2g} ({r['mc_rel_error']:+.2%})" if "R_mc" in r else ""
        if "cycle_fraction" in r:
            extra = f"{r['cycle_fraction']:.1%} of start tokens cycle, e.g. {r['example_cycle'][:6]}"
        print(f"{name:>16} {r['zeta']:9.3g} {r['lambda_1']:9.4g} [{r['lambda_lower']:.3g}, {r['lambda_upper']:.3g}]"
              f"{R:>12}  {extra}")
    print(f"wrote {path}")
    return path


def _read_texts(path: Path, unit: str, flag: str) -> list[list[str]]:
    """Non-empty lines of a user's UTF-8 text file, split into words or characters."""
    lines = read_text(path, f"{flag} file").splitlines()
    texts = [line.split() if unit == "word" else list(line) for line in lines if line.strip()]
    if not texts:
        raise KexueError(f"{flag} {path} holds no text (no non-empty line)")
    return texts


def measure(texts: Path | None = None, unit: Literal["word", "char"] = "word", corpus: str = "ptb",
            level: Literal["char", "word", "rebalanced"] = "word",
            decoders: str = "sample,top_p:0.9,top_k:10,top_k:3,greedy", samples: PositiveInt = 500,
            max_length: PositiveInt = 100, max_sentences: PositiveInt | None = None,
            word_vocab: PositiveInt | None = None, seed: NonNegativeInt = 0, out: Path | None = None,
            overwrite: bool = False) -> Path:
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
    names = _decoders(decoders) if texts is None else []
    check_new_run_dir(out, overwrite)
    table: dict[str, dict] = {}
    if texts is not None:
        table[str(texts)] = repetition_metrics(_read_texts(texts, unit, "--texts"))
        run = make_run_dir(out, "repetition-measure", config, overwrite=overwrite)
    else:
        _check_corpus(corpus, ("train", "valid"))
        encoding = None
        if level == "rebalanced":  # learn it here so that the held-out text gets the same encoding
            chars, _ = level_sentences("char", corpus, "train", max_sentences=max_sentences)
            encoding = RebalancedEncoding.learn(chars)
        sents, _ = level_sentences(level, corpus, "train", max_sentences=max_sentences, word_vocab=word_vocab,
                                   encoding=encoding)
        chain = estimate_bigram(sents)
        held = load_corpus(corpus, "valid")[:samples]
        if not held:
            raise KexueError(f"--corpus {corpus}: valid.txt holds no sentence")
        if level != "word":
            held = [list(" ".join(s)) for s in held]
        if encoding is not None:
            held = encoding.encode_corpus(held)
        run = make_run_dir(out, "repetition-measure", config, overwrite=overwrite)
        table["held-out text"] = repetition_metrics(held)
        for name in progress(names, desc="decoders"):
            seqs = sample_sequences(named_chain(chain.P, name), chain.start, samples, max_length, seed=seed)
            table[name] = repetition_metrics(seqs)
    path = write_json(run / "metrics.json", table)
    cols = ["rep_w", "rep_r", "seq_rep_4", "distinct_2", "loop_fraction", "loop_at_end_fraction", "mean_length"]
    print(f"{'':>16} " + " ".join(f"{c:>12}" for c in cols))
    for name, m in table.items():
        print(f"{name[-16:]:>16} " + " ".join(f"{m[c]:12.4g}" for c in cols))
    print(f"wrote {path}")
    return path


def rebalance(corpus: str = "ptb", level: Literal["char", "word"] = "char", threshold: OpenUnitInterval = 0.1,
              iterations: PositiveInt = 10, encoding: Path | None = None, apply: Path | None = None,
              max_sentences: PositiveInt | None = None, out: Path | None = None, overwrite: bool = False) -> Path:
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
    _check_corpus(corpus, ("train", "valid"))

    def units(sents):
        return [list(" ".join(s)) for s in sents] if level == "char" else sents

    train = units(load_corpus(corpus, "train")[:max_sentences] if max_sentences else load_corpus(corpus, "train"))
    valid = units(load_corpus(corpus, "valid"))
    if not train or not valid:
        raise KexueError(f"--corpus {corpus}: {'train' if not train else 'valid'}.txt holds no sentence")
    run = make_run_dir(out, "repetition-rebalance", config, overwrite=overwrite)
    if enc is None:
        bar = progress(total=iterations, desc="merge rounds")
        enc = RebalancedEncoding.learn(train, threshold, iterations, joiner="" if level == "char" else "_",
                                       progress=lambda r, v: (bar.update(1), bar.set_postfix(vocab=v)))
        bar.close()
    path = enc.save(run / "encoding.json")
    coded = enc.encode_corpus(valid)
    exact = sum(enc.decode(c) == v for c, v in zip(coded, valid))
    before = analyze(estimate_bigram(train).P)
    after = analyze(estimate_bigram(enc.encode_corpus(train)).P)
    summary = {"rounds": [len(r) for r in enc.rounds], "merged_tokens": len(enc.parts),
               "valid_round_trips": exact, "valid_sentences": len(valid),
               "tokens_per_unit": sum(map(len, coded)) / max(sum(map(len, valid)), 1),
               "before": before.as_dict(), "after": after.as_dict()}
    write_json(run / "summary.json", summary)
    if lines is not None:
        write_text(run / "encoded.jsonl", "".join(json.dumps(enc.encode(s)) + "\n" for s in lines))
        print(f"encoded {len(lines)} lines into {run / 'encoded.jsonl'}")
    print(f"merge rounds: {summary['rounds']} -> {len(enc.parts)} merged tokens; "
          f"{summary['tokens_per_unit']:.3f} tokens per {level} on valid")
    print(f"exact round trips on valid: {exact}/{len(valid)}")
    print(f"example: {coded[0][:12]}")
    print(f"sampling chain before: n={before.n} λ_1={before.lambda_1:.4g} mean Σ_j P_ij²={before.mean_concentration:.4g} "
          f"R={before.R:.4g}")
    print(f"sampling chain after:  n={after.n} λ_1={after.lambda_1:.4g} mean Σ_j P_ij²={after.mean_concentration:.4g} "
          f"R={after.R:.4g}")
    print(f"wrote {path}")
    return path
