"""``kexue repetition theory / measure / rebalance`` (kexue.fm/archives/8128)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from kexue.analysis.repetition import (
    analyze,
    cycle_length_for,
    estimate_bigram,
    greedy_cycles,
    importance_weights,
    named_chain,
    repetition_metrics,
    sample_sequences,
    simulate_repetition,
)
from kexue.bench.repetition import level_sentences
from kexue.data.text import load_corpus
from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError
from kexue.io import make_run_dir, write_json, write_text


def load_matrix(path: Path):
    """A transition matrix from ``.npy`` (dense), ``.npz`` (scipy.sparse.save_npz, or an array named P)
    or ``.csv`` / ``.txt`` (numbers separated by commas or spaces)."""
    path = Path(path)
    if not path.is_file():
        raise KexueError(f"matrix file not found: {path}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            try:
                return sp.load_npz(path)
            except (ValueError, KeyError):
                with np.load(path, allow_pickle=False) as z:
                    if "P" not in z:
                        raise KexueError(f"{path} holds neither a scipy sparse matrix nor an array named P") from None
                    return z["P"]
        return np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (OSError, ValueError) as e:
        raise KexueError(f"cannot read a matrix from {path}: {e}") from None


def _chain(matrix: Path | None, corpus: str, level: str, max_sentences: int | None, word_vocab: int | None):
    if matrix is not None:
        P = load_matrix(matrix)
        n = P.shape[0]
        return P, np.full(n, 1.0 / n), [str(i) for i in range(n)], {"matrix": str(matrix)}
    sents, info = level_sentences(level, corpus, "train", max_sentences=max_sentences, word_vocab=word_vocab)
    chain = estimate_bigram(sents)
    return chain.P, chain.start, chain.tokens, info


def _decoders(decoders: str) -> list[str]:
    names = [d.strip() for d in decoders.split(",") if d.strip()]
    if not names:
        raise KexueError("give at least one decoder, e.g. sample,top_p:0.9,top_k:10,greedy")
    return names


def theory(matrix: Path | None = None, corpus: str = "ptb", level: str = "char",
           decoders: str = "sample,top_p:0.9,top_k:10,greedy", max_sentences: int | None = None,
           word_vocab: int | None = None, simulate: int = 0, seed: int = 0, out: Path | None = None) -> Path:
    """Exact repetition probability R = Σ_k Tr((P∘P)^k) of a bigram chain under each decoder.

    Args:
        matrix: a transition matrix file (.npy, .npz, .csv); otherwise the bigram chain of ``corpus``.
        corpus: ``ptb`` or a folder with train.txt (one sentence per line).
        level: ``char``, ``word`` or ``rebalanced`` (characters after rebalanced encoding).
        decoders: comma-separated: sample, greedy, top_k:K, top_p:P, temp:T (combine with +).
        max_sentences: use only the first sentences of the corpus.
        word_vocab: at word level, keep the most frequent words (the rest become <unk>).
        simulate: if > 0, also simulate this many chains per decoder and compare with R.
        seed: seed of the simulation.
        out: run folder (default runs/repetition-theory-<time>/).
    Returns:
        The path of theory.json.
    """
    names = _decoders(decoders)
    P, _, tokens, info = _chain(matrix, corpus, level, max_sentences, word_vocab)
    run = make_run_dir(out, "repetition-theory", {"matrix": matrix, "corpus": corpus, "level": level,
                                                  "decoders": decoders, "max_sentences": max_sentences,
                                                  "word_vocab": word_vocab, "simulate": simulate, "seed": seed})
    rows = {}
    for name in tqdm(names, desc="decoders", disable=len(names) < 2):
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


def _read_texts(path: Path, unit: str) -> list[list[str]]:
    if unit not in ("word", "char"):
        raise KexueError(f"unit must be word or char, got {unit!r}")
    if not Path(path).is_file():
        raise KexueError(f"text file not found: {path}")
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split() if unit == "word" else list(line) for line in lines if line.strip()]


def measure(texts: Path | None = None, unit: str = "word", corpus: str = "ptb", level: str = "word",
            decoders: str = "sample,top_p:0.9,top_k:10,top_k:3,greedy", samples: int = 500, max_length: int = 100,
            max_sentences: int | None = None, word_vocab: int | None = None, seed: int = 0,
            out: Path | None = None) -> Path:
    """Repetition metrics (rep-w, rep-r, seq-rep-4, distinct-n, loops) of texts or of bigram decoders.

    Args:
        texts: a file of generated texts, one per line; without it, sentences are sampled from
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
    Returns:
        The path of metrics.json.
    """
    run = make_run_dir(out, "repetition-measure", {"texts": texts, "unit": unit, "corpus": corpus, "level": level,
                                                   "decoders": decoders, "samples": samples, "max_length": max_length,
                                                   "seed": seed})
    table: dict[str, dict] = {}
    if texts is not None:
        table[str(texts)] = repetition_metrics(_read_texts(texts, unit))
    else:
        encoding = None
        if level == "rebalanced":  # learn it here so that the held-out text gets the same encoding
            chars, _ = level_sentences("char", corpus, "train", max_sentences=max_sentences)
            encoding = RebalancedEncoding.learn(chars)
        sents, _ = level_sentences(level, corpus, "train", max_sentences=max_sentences, word_vocab=word_vocab,
                                   encoding=encoding)
        chain = estimate_bigram(sents)
        held = load_corpus(corpus, "valid")[:samples]
        if level != "word":
            held = [list(" ".join(s)) for s in held]
        if encoding is not None:
            held = encoding.encode_corpus(held)
        table["held-out text"] = repetition_metrics(held)
        for name in tqdm(_decoders(decoders), desc="decoders"):
            seqs = sample_sequences(named_chain(chain.P, name), chain.start, samples, max_length, seed=seed)
            table[name] = repetition_metrics(seqs)
    path = write_json(run / "metrics.json", table)
    cols = ["rep_w", "rep_r", "seq_rep_4", "distinct_2", "loop_fraction", "loop_at_end_fraction", "mean_length"]
    print(f"{'':>16} " + " ".join(f"{c:>12}" for c in cols))
    for name, m in table.items():
        print(f"{name[-16:]:>16} " + " ".join(f"{m[c]:12.4g}" for c in cols))
    print(f"wrote {path}")
    return path


def rebalance(corpus: str = "ptb", level: str = "char", threshold: float = 0.1, iterations: int = 10,
              encoding: Path | None = None, apply: Path | None = None, max_sentences: int | None = None,
              out: Path | None = None) -> Path:
    """Learn a rebalanced encoding (merge pairs with P(b|a) > threshold, repeat) or apply one.

    Args:
        corpus: ``ptb`` or a folder with train.txt / valid.txt: where to learn the merges.
        level: the units merged: char (characters, joiner "") or word (words, joiner "_").
        threshold: merge pairs whose add-one bigram probability exceeds it (paper: 0.1).
        iterations: merge rounds at most (paper: 10).
        encoding: an encoding.json to load instead of learning one.
        apply: a text file (one sentence per line) to encode into ``encoded.jsonl``.
        max_sentences: learn from the first sentences only.
        out: run folder (default runs/repetition-rebalance-<time>/).
    Returns:
        The path of encoding.json.
    """
    if level not in ("char", "word"):
        raise KexueError(f"level must be char or word, got {level!r}")
    run = make_run_dir(out, "repetition-rebalance", {"corpus": corpus, "level": level, "threshold": threshold,
                                                     "iterations": iterations, "encoding": encoding, "apply": apply})

    def units(sents):
        return [list(" ".join(s)) for s in sents] if level == "char" else sents

    train = units(load_corpus(corpus, "train")[:max_sentences] if max_sentences else load_corpus(corpus, "train"))
    if encoding is not None:
        enc = RebalancedEncoding.load(encoding)
    else:
        bar = tqdm(total=iterations, desc="merge rounds")
        enc = RebalancedEncoding.learn(train, threshold, iterations, joiner="" if level == "char" else "_",
                                       progress=lambda r, v: (bar.update(1), bar.set_postfix(vocab=v)))
        bar.close()
    path = enc.save(run / "encoding.json")
    valid = units(load_corpus(corpus, "valid"))
    coded = enc.encode_corpus(valid)
    exact = sum(enc.decode(c) == v for c, v in zip(coded, valid))
    before = analyze(estimate_bigram(train).P)
    after = analyze(estimate_bigram(enc.encode_corpus(train)).P)
    summary = {"rounds": [len(r) for r in enc.rounds], "merged_tokens": len(enc.parts),
               "valid_round_trips": exact, "valid_sentences": len(valid),
               "tokens_per_unit": sum(map(len, coded)) / max(sum(map(len, valid)), 1),
               "before": before.as_dict(), "after": after.as_dict()}
    write_json(run / "summary.json", summary)
    if apply is not None:
        lines = _read_texts(apply, level)
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
