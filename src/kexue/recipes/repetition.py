"""Article 7, theory of repetition (kexue.fm/archives/8128): the procedures behind its commands.

- :func:`theory`, :func:`measure`, :func:`rebalance`: the recipes of ``kexue repetition theory /
  measure / rebalance``, with the same parameters as the commands: they validate, make the run
  folder and write its files;
- :func:`decoder_table`: R, λ_1(P∘P) and its bounds for a chain under each decoder, optionally
  checked by simulation (``kexue repetition theory``);
- :func:`metrics_table`: text metrics of sentences sampled from a bigram chain under each decoder,
  beside held-out text (``kexue repetition measure``);
- :func:`rebalance_summary`: what a rebalanced encoding does to a corpus (``kexue repetition rebalance``);
- :func:`run_study`: the corpus study and Monte-Carlo check (``kexue bench repetition`` and the
  report section of ``kexue reproduce``), with :func:`figures_of` and :func:`plot_study`.

Example::

    chain, info = corpus_chain("ptb", "char")
    rows = decoder_table(chain.P, ["sample", "top_p:0.9", "greedy"], chain.tokens)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np

from kexue.analysis.repetition import (
    Analysis,
    BigramChain,
    analyze,
    as_transition,
    cycle_length_for,
    estimate_bigram,
    greedy_cycles,
    importance_weights,
    named_chain,
    sample_sequences,
    simulate_repetition,
)
from kexue.analysis.text import repetition_metrics
from kexue.checks import check_new_run_dir, comma_names
from kexue.data.levels import LEVELS, characters, check_corpus_folder, level_sentences
from kexue.data.matrices import read_matrix
from kexue.data.text import load_corpus
from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError
from kexue.io import make_run_dir, read_text, write_json, write_text
from kexue.params import NonNegativeInt, OpenUnitInterval, PositiveInt
from kexue.progress import progress as progress_bar
from kexue.results import Figure

# the three decoders of the results keys; greedy is reported separately
KEY_DECODERS = {"R_sample": "sample", "R_top_p90": "top_p:0.9", "R_top_k10": "top_k:10"}
SWEEP = ("top_k:2", "top_k:3", "top_k:5", "top_k:20", "top_k:50", "top_p:0.5", "top_p:0.7", "top_p:0.95", "temp:0.7")
RANDOM_CHAINS_QUICK = [(5, 0.3), (10, 1.0), (20, 0.1), (50, 0.5), (100, 0.05)]
RANDOM_CHAINS_FULL = [
    (5, 0.3),
    (5, 3.0),
    (10, 1.0),
    (20, 0.1),
    (20, 1.0),
    (50, 0.5),
    (100, 0.05),
    (100, 0.3),
    (300, 0.1),
    (1000, 0.05),
]


# --------------------------------------------------------------------------- chains and decoders


def decoder_names(text: str, flag: str = "--decoders") -> list[str]:
    """``"sample,top_k:10"`` -> the decoder names, each checked (on a one-token chain) before any work."""
    names = comma_names(text, None, flag)
    for name in names:
        try:
            named_chain(np.array([[0.5]]), name)
        except KexueError as e:
            raise KexueError(f"{flag} {name}: {e}") from None
    return names


def load_chain(path: str | Path, flag: str = "--matrix"):
    """A transition matrix file (see :func:`kexue.data.matrices.read_matrix`) checked as a chain.

    Rows are probabilities over the tokens, what a row leaves to 1 is eos: square, non-empty,
    finite, non-negative, rows summing to at most 1; anything else is one KexueError naming the file.
    """
    P = read_matrix(path, flag)
    try:
        return as_transition(P)
    except KexueError as e:
        raise KexueError(f"{flag} {path}: {e}") from None


def corpus_chain(
    corpus: str,
    level: str,
    max_sentences: int | None = None,
    word_vocab: int | None = None,
    encoding: RebalancedEncoding | None = None,
) -> tuple[BigramChain, dict]:
    """The bigram chain of a corpus's training split at one level (see :func:`kexue.data.levels.level_sentences`)."""
    sents, info = level_sentences(
        level, corpus, "train", max_sentences=max_sentences, word_vocab=word_vocab, encoding=encoding
    )
    return estimate_bigram(sents), info


def decoder_row(a: Analysis) -> dict:
    """The JSON row of one analysed chain: every number of :class:`Analysis`, divergent R as None."""
    row = {k: v for k, v in a.as_dict().items() if k != "deterministic_cycle"}
    row["R"] = a.R if math.isfinite(a.R) else None
    row["R_upper"] = a.R_upper if math.isfinite(a.R_upper) else None
    return row


def start_weights(P, by_token: np.ndarray | None) -> np.ndarray:
    """Start tokens for the simulation: ∝ 0.8·√r_i + 0.2·(short-cycle proxy), or the proxy alone.

    √r_i minimises the variance of rare-event counts; the estimate stays unbiased for any weights
    that are positive everywhere (the proxy mixes in a uniform floor), so using the closed form's
    r_i to choose them does not make the check circular, only cheaper.
    """
    q = importance_weights(P)
    if by_token is None or by_token.sum() <= 0:
        return q
    root = np.sqrt(np.clip(by_token, 0, None))
    return 0.8 * root / root.sum() + 0.2 * q


def decoder_table(
    P, decoders: list[str], tokens: list | None = None, simulate: int = 0, seed: int = 0, progress: bool = True
) -> dict[str, dict]:
    """R, λ_1(P∘P), its bounds and ζ of the chain ``P`` under each decoder name (see ``named_chain``).

    Where R diverges the row gives the share of start tokens whose greedy-like chain cycles and an
    example cycle (as ``tokens``); with ``simulate`` > 0 each finite R is compared with that many
    simulated chains (``R_mc``, ``R_mc_stderr``, ``mc_rel_error``, ``mc_z``, ``mc_k_max``).
    """
    tokens = tokens if tokens is not None else list(range(P.shape[0]))
    rows = {}
    for name in progress_bar(decoders, desc="decoders", enabled=progress and len(decoders) > 1):
        C = named_chain(P, name)
        a = analyze(C)
        row = decoder_row(a)
        if not math.isfinite(a.R):
            row["cycle_fraction"] = greedy_cycles(C).cycle_fraction
            row["example_cycle"] = [tokens[i] for i in (a.deterministic_cycle or [])][:20]
        elif simulate > 0 and a.R > 0:
            K = cycle_length_for(C, R=a.R, lam=a.lambda_1)
            mc = simulate_repetition(
                C, simulate, K, seed=seed, start_weights=start_weights(C, a.by_token), lam=a.lambda_1
            )
            row.update(
                R_mc=mc.value, R_mc_stderr=mc.stderr, mc_rel_error=mc.value / a.R - 1, mc_z=mc.z_score(a.R), mc_k_max=K
            )
        rows[name] = row
    return rows


# --------------------------------------------------------------------------- text metrics of decoders


def chain_and_held_out(
    corpus: str, level: str, held_out: int, max_sentences: int | None = None, word_vocab: int | None = None
) -> tuple[BigramChain, list[list[str]]]:
    """The bigram chain of the training split at ``level`` and the first ``held_out`` validation
    sentences in the same units (at rebalanced level, one encoding learned on the training
    characters serves both)."""
    encoding = None
    if level == "rebalanced":
        chars, _ = level_sentences("char", corpus, "train", max_sentences=max_sentences)
        encoding = RebalancedEncoding.learn(chars)
    chain, _ = corpus_chain(corpus, level, max_sentences, word_vocab, encoding=encoding)
    held = load_corpus(corpus, "valid")[:held_out]
    if not held:
        raise KexueError(f"--corpus {corpus}: valid.txt holds no sentence")
    if level != "word":
        held = characters(held)
    if encoding is not None:
        held = encoding.encode_corpus(held)
    return chain, held


def metrics_table(
    chain: BigramChain,
    decoders: list[str],
    samples: int,
    max_length: int,
    seed: int = 0,
    held_out: list | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Repetition metrics (:func:`kexue.analysis.text.repetition_metrics`) of ``samples`` sentences
    drawn from ``chain`` under each decoder, after those of ``held_out`` text when given."""
    table: dict[str, dict] = {}
    if held_out is not None:
        table["held-out text"] = repetition_metrics(held_out)
    for name in progress_bar(decoders, desc="decoders", enabled=progress):
        seqs = sample_sequences(named_chain(chain.P, name), chain.start, samples, max_length, seed=seed)
        table[name] = repetition_metrics(seqs)
    return table


# --------------------------------------------------------------------------- rebalanced encoding


def units(sentences: list[list[str]], level: str) -> list[list[str]]:
    """Word sentences as the units an encoding merges: characters (``char``) or the words themselves."""
    return characters(sentences) if level == "char" else sentences


def learn_encoding(
    train: list[list[str]], level: str, threshold: float = 0.1, iterations: int = 10, progress: bool = True
) -> RebalancedEncoding:
    """Learn a rebalanced encoding of ``train`` units (joiner "" for characters, "_" for words)."""
    bar = progress_bar(total=iterations, desc="merge rounds", enabled=progress)
    enc = RebalancedEncoding.learn(
        train,
        threshold,
        iterations,
        joiner="" if level == "char" else "_",
        progress=lambda r, v: (bar.update(1), bar.set_postfix(vocab=v)),
    )
    bar.close()
    return enc


def rebalance_summary(enc: RebalancedEncoding, train: list[list[str]], valid: list[list[str]]) -> dict:
    """Merge rounds, exact round trips on ``valid``, tokens per unit, and the sampling chain before / after."""
    coded = enc.encode_corpus(valid)
    exact = sum(enc.decode(c) == v for c, v in zip(coded, valid))
    before = analyze(estimate_bigram(train).P)
    after = analyze(estimate_bigram(enc.encode_corpus(train)).P)
    return {
        "rounds": [len(r) for r in enc.rounds],
        "merged_tokens": len(enc.parts),
        "valid_round_trips": exact,
        "valid_sentences": len(valid),
        "tokens_per_unit": sum(map(len, coded)) / max(sum(map(len, valid)), 1),
        "example": coded[0][:12] if coded else [],
        "before": before.as_dict(),
        "after": after.as_dict(),
    }


# --------------------------------------------------------------------------- the recipes of the commands


@dataclass
class TheoryRun:
    """What :func:`theory` wrote: ``path`` (theory.json), the chain's ``source`` and size ``n``, the decoder rows."""

    path: Path
    source: dict
    n: int
    rows: dict[str, dict]


@dataclass
class MeasureRun:
    """What :func:`measure` wrote: ``path`` (metrics.json) and its table (one row of metrics per text / decoder)."""

    path: Path
    table: dict[str, dict]


@dataclass
class RebalanceRun:
    """What :func:`rebalance` wrote: ``path`` (encoding.json), the summary (summary.json) and, with
    ``apply``, the encoded lines (``encoded``: encoded.jsonl, ``encoded_lines``: how many)."""

    path: Path
    summary: dict
    encoded: Path | None = None
    encoded_lines: int = 0


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
) -> TheoryRun:
    """``kexue repetition theory``: R of a matrix's (or a corpus's bigram) chain under each decoder,
    written to theory.json in the run folder ``out`` (see the command for the parameters)."""
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
    return TheoryRun(path, info, P.shape[0], rows)


def read_texts(path: Path, unit: str, flag: str) -> list[list[str]]:
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
) -> MeasureRun:
    """``kexue repetition measure``: repetition metrics of ``texts`` or of sentences sampled from a
    bigram chain under each decoder, written to metrics.json in the run folder ``out``."""
    config = dict(locals())
    names = decoder_names(decoders) if texts is None else []
    check_new_run_dir(out, overwrite)
    if texts is not None:
        lines = read_texts(texts, unit, "--texts")
        run = make_run_dir(out, "repetition-measure", config, overwrite=overwrite)
        table = {str(texts): repetition_metrics(lines)}
    else:
        check_corpus_folder(corpus, ("train", "valid"))
        chain, held = chain_and_held_out(corpus, level, samples, max_sentences, word_vocab)
        run = make_run_dir(out, "repetition-measure", config, overwrite=overwrite)
        table = metrics_table(chain, names, samples, max_length, seed=seed, held_out=held)
    return MeasureRun(write_json(run / "metrics.json", table), table)


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
) -> RebalanceRun:
    """``kexue repetition rebalance``: learn (or load) a rebalanced encoding, write encoding.json,
    summary.json and, with ``apply``, encoded.jsonl into the run folder ``out``."""
    config = dict(locals())
    check_new_run_dir(out, overwrite)
    enc = RebalancedEncoding.load(encoding) if encoding is not None else None
    lines = read_texts(apply, level, "--apply") if apply is not None else None
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
    result = RebalanceRun(path, summary)
    if lines is not None:
        text = "".join(json.dumps(enc.encode(s)) + "\n" for s in lines)
        result.encoded, result.encoded_lines = write_text(run / "encoded.jsonl", text), len(lines)
    return result


# --------------------------------------------------------------------------- the corpus study


def study_level(sentences: list[list[str]], decoders: list[str], progress: Callable[[str], None] | None = None) -> dict:
    """Analytic numbers of the bigram chain of ``sentences`` under each decoder name (see named_chain)."""
    chain = estimate_bigram(sentences)
    out: dict = {"n": chain.P.shape[0], "tokens": int(chain.counts.sum()), "decoders": {}, "by_token": {}}
    for name in decoders:
        t0 = time.perf_counter()
        C = named_chain(chain.P, name)
        row = {}
        if name == "greedy":
            g = greedy_cycles(chain.P)
            start_cycles = float(chain.start[g.start_cycles].sum())  # from a sentence start (bos)
            row = {
                "cycle_fraction": g.cycle_fraction,
                "bos_cycle_probability": start_cycles,
                "cycles": len(g.cycles),
                "cycle_lengths": sorted({len(c) for c in g.cycles}),
                "example_cycles": [[chain.tokens[i] for i in c] for c in g.cycles[:5]],
            }
        a = analyze(C)
        row.update(decoder_row(a))
        row["R_per_token"] = a.R / a.n if math.isfinite(a.R) else None
        if a.by_token is not None and a.R > 0:
            top = np.argsort(-a.by_token)[:10]
            row["top_tokens"] = [[str(chain.tokens[i]), float(a.by_token[i])] for i in top[:5]]
            row["top10_share"] = float(a.by_token[top].sum() / a.R)
            out["by_token"][name] = a.by_token
        row["seconds"] = time.perf_counter() - t0
        out["decoders"][name] = row
        if progress is not None:
            progress(f"{name}: R = {row['R']}, λ_1 = {a.lambda_1:.4g}")
    out["chain"] = chain
    return out


def random_chain(rng: np.random.Generator, n: int, concentration: float) -> np.ndarray:
    """A chain with Dirichlet(concentration) rows over n tokens + eos (eos dropped): (n, n)."""
    return rng.dirichlet(np.full(n + 1, concentration), size=n)[:, :n]


def monte_carlo_check(
    P,
    R: float,
    lam: float,
    seed: int,
    by_token: np.ndarray | None = None,
    target_rel_se: float = 0.0125,
    min_chains: int = 1_000_000,
    max_chains: int = 40_000_000,
) -> dict:
    """Simulate the chain and compare the repeat count with the exact R.

    Chains are added (in chunks) until the relative standard error reaches ``target_rel_se``
    (after at least ``min_chains``, at most ``max_chains``). At 1.25 % the 5 % agreement asked
    for is a 4-sigma band. The repeat count N of one chain is rare-event data, so with uniform
    starts the relative error is about sqrt(n / (chains · R)); start tokens are therefore drawn
    from :func:`start_weights` (√r_i when ``by_token`` is given).
    """
    K = cycle_length_for(P, R=R, lam=lam)
    q = start_weights(P, by_token)
    t0 = time.perf_counter()
    mc = simulate_repetition(
        P, max_chains, K, seed=seed, start_weights=q, lam=lam, rel_stderr=target_rel_se, min_chains=min_chains
    )
    return {
        "R": R,
        "R_mc": mc.value,
        "stderr": mc.stderr,
        "rel_error": mc.value / R - 1,
        "rel_stderr": mc.stderr / R,
        "z": mc.z_score(R),
        "chains": mc.n_chains,
        "k_max": K,
        "bias_bound": mc.bias_bound,
        "start_weights": "sqrt(r) mixture" if by_token is not None and by_token.sum() > 0 else "proxy",
        "seconds": time.perf_counter() - t0,
    }


def run_study(
    quick: bool = False,
    seed: int = 0,
    corpus: str = "ptb",
    log: Callable[[str], None] = print,
    random_sizes: list[tuple[int, float]] | None = None,
    chains: tuple[int, int] | None = None,
) -> dict:
    """The whole study (analytic per level and decoder, Monte-Carlo checks); returns a JSON-able dict.

    ``quick``: the first 5k sentences, a 2k-word vocabulary, fewer decoders and random chains.
    ``random_sizes`` ((n, Dirichlet concentration) pairs) and ``chains`` ((min, max) simulated
    chains per check) override the defaults of the mode, e.g. for a fast test.
    """
    t_start = time.perf_counter()
    detail: dict = {"quick": quick, "seed": seed, "levels": {}, "mc": {"random": [], "corpus": []}}
    max_sentences = 5000 if quick else None
    word_vocab = 2000 if quick else None
    sweep = list(SWEEP) if not quick else ["top_k:3", "top_p:0.7"]
    decoders = list(KEY_DECODERS.values()) + sweep + ["greedy"]
    min_chains, max_chains = chains or ((200_000, 4_000_000) if quick else (1_000_000, 40_000_000))
    bigrams, by_token = {}, {}
    for level in LEVELS:
        log(f"[repetition] level {level}: building the corpus")
        sents, info = level_sentences(level, corpus, "train", max_sentences=max_sentences, word_vocab=word_vocab)
        res = study_level(sents, decoders, progress=lambda s, lv=level: log(f"[repetition]   {lv} {s}"))
        bigrams[level] = res.pop("chain")
        by_token[level] = res.pop("by_token")
        res["info"] = info
        detail["levels"][level] = res
    # Monte-Carlo: random chains ...
    rng = np.random.default_rng(seed)
    sizes = random_sizes if random_sizes is not None else RANDOM_CHAINS_QUICK if quick else RANDOM_CHAINS_FULL
    for i, (n, conc) in enumerate(sizes):
        P = random_chain(rng, n, conc)
        for dec in ("sample", "top_p:0.9", "top_k:3"):
            C = named_chain(P, dec)
            a = analyze(C)
            if not math.isfinite(a.R) or a.R <= 0:
                continue
            row = monte_carlo_check(
                C,
                a.R,
                a.lambda_1,
                seed=seed + 10 * i,
                by_token=a.by_token,
                max_chains=max_chains,
                min_chains=min_chains,
            )
            row.update(n=n, concentration=conc, decoder=dec)
            detail["mc"]["random"].append(row)
            log(
                f"[repetition] mc random n={n} a={conc} {dec}: R={a.R:.4g} mc={row['R_mc']:.4g} "
                f"rel={row['rel_error']:+.3%} z={row['z']:+.2f}"
            )
    # ... and the corpus chains
    for level in LEVELS:
        for dec in KEY_DECODERS.values():
            a = detail["levels"][level]["decoders"][dec]
            if a["R"] is None or a["R"] <= 0:
                continue
            C = named_chain(bigrams[level].P, dec)
            row = monte_carlo_check(
                C,
                a["R"],
                a["lambda_1"],
                seed=seed + 1000 + len(detail["mc"]["corpus"]),
                by_token=by_token[level].get(dec),
                max_chains=max_chains,
                min_chains=min_chains,
            )
            row.update(level=level, decoder=dec)
            detail["mc"]["corpus"].append(row)
            log(
                f"[repetition] mc {level} {dec}: R={a['R']:.4g} mc={row['R_mc']:.4g} "
                f"rel={row['rel_error']:+.3%} z={row['z']:+.2f}"
            )
    detail["claims"] = check_claims(detail)
    detail["seconds"] = time.perf_counter() - t_start
    return detail


def check_claims(detail: dict) -> dict:
    """The article's qualitative claims, each as a boolean with the numbers behind it."""
    claims: dict = {}
    for level, res in detail["levels"].items():
        d = res["decoders"]
        R = {k: v["R"] for k, v in d.items() if v.get("R") is not None}
        ks = sorted((int(k.split(":")[1]), v) for k, v in R.items() if k.startswith("top_k:"))
        ps = sorted((float(k.split(":")[1]), v) for k, v in R.items() if k.startswith("top_p:"))
        claims[level] = {
            "truncation_raises_R": all(R[dec] > R["sample"] for dec in ("top_k:10", "top_p:0.9") if dec in R),
            "R_decreases_with_k": all(a[1] >= b[1] for a, b in pairwise(ks)),
            "R_decreases_with_p": all(a[1] >= b[1] for a, b in pairwise(ps)),
            "greedy_worst": d["greedy"]["cycle_fraction"] > 0
            or d["greedy"]["lambda_1"] >= max(v["lambda_1"] for k, v in d.items() if k != "greedy"),
        }
    lv = detail["levels"]
    for other in ("word", "rebalanced"):
        if other in lv and "char" in lv:
            c, o = lv["char"]["decoders"]["sample"], lv[other]["decoders"]["sample"]
            claims[f"{other}_flatter_than_char"] = {
                "mean_concentration": o["mean_concentration"] < c["mean_concentration"],
                "lambda_1": o["lambda_1"] < c["lambda_1"],
                "R_per_token": o["R_per_token"] < c["R_per_token"],
                "R": o["R"] < c["R"],
            }
    return claims


def figures_of(detail: dict, command: str) -> list[Figure]:
    """The results.json figures of a study; ``command`` is the one that reproduces it
    (:func:`kexue.provenance.command_line`). The paper and Su's post publish no R, so none has a
    published value."""
    figs = []
    worst = max([abs(r["rel_error"]) for r in detail["mc"]["random"] + detail["mc"]["corpus"]], default=math.nan)
    figs.append(Figure("repetition.mc_rel_error_max", worst, None, None, command))
    for level, res in detail["levels"].items():
        d = res["decoders"]
        for key, dec in KEY_DECODERS.items():
            if d[dec]["R"] is not None:
                figs.append(Figure(f"repetition.ptb.{level}.{key}", d[dec]["R"], None, None, command))
        figs.append(
            Figure(f"repetition.ptb.{level}.greedy_cycle_fraction", d["greedy"]["cycle_fraction"], None, None, command)
        )
    return figs


def plot_study(detail: dict, path: Path) -> Path:
    """R (log scale) per decoder and level, and λ_1(P∘P): the figure of the study."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kexue.io import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    levels = [lv for lv in LEVELS if lv in detail["levels"]]

    def order(name: str) -> tuple:
        kind, _, arg = name.partition(":")
        return ({"sample": 0, "top_p": 1, "top_k": 2, "temp": 3}.get(kind, 4), -float(arg or 0))

    for level in levels:
        res = detail["levels"][level]
        d = res["decoders"]
        ks = sorted((int(k.split(":")[1]), v["R"]) for k, v in d.items() if k.startswith("top_k:") and v["R"])
        ps = sorted((float(k.split(":")[1]), v["R"]) for k, v in d.items() if k.startswith("top_p:") and v["R"])
        line = axes[0].plot([k for k, _ in ks], [r for _, r in ks], "o-", label=f"{level} (n={res['n']})")[0]
        axes[0].axhline(d["sample"]["R"], color=line.get_color(), ls=":", lw=1)
        axes[1].plot([p for p, _ in ps] + [1.0], [r for _, r in ps] + [d["sample"]["R"]], "o-", label=level)
        names = sorted((k for k in d if k != "greedy"), key=order)
        axes[2].plot(range(len(names)), [d[k]["lambda_1"] for k in names], "o", label=level)
        axes[2].set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    all_k = sorted(
        {int(k.split(":")[1]) for res in detail["levels"].values() for k in res["decoders"] if k.startswith("top_k:")}
    )
    axes[0].set_xscale("log")
    axes[0].set_xticks(all_k, [str(k) for k in all_k])
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set(
        yscale="log",
        xlabel="top-k  (dotted: sampling, no truncation)",
        ylabel="R = Σ Tr((P∘P)^k)",
        title="Harsher truncation (small k) raises R",
    )
    axes[1].set(yscale="log", xlabel="top-p  (p = 1: sampling)", ylabel="R", title="R against nucleus mass p")
    axes[2].set(ylabel="λ_1(P∘P)", title="Largest eigenvalue of P∘P per decoder")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Repetition of PTB bigram decoders (kexue.fm/archives/8128); greedy cycles: "
        + ", ".join(f"{lv} {detail['levels'][lv]['decoders']['greedy']['cycle_fraction']:.0%}" for lv in levels),
        fontsize=10,
    )
    return save_figure(fig, path)


def jsonable(x):
    """numpy scalars to Python, non-finite floats to None (JSON has no inf)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
