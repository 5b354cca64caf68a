"""``kexue bench repetition``: the corpus study of archives/8128 and the Monte-Carlo check of R.

1. Bigram chains P estimated from PTB at character level, word level and after rebalanced
   encoding (learned on the characters); for each, the chain of every decoder (ancestral
   sampling, top-k, top-p, temperature, greedy) and its ζ, λ_1(P∘P), bounds and exact R.
   Greedy makes rows one-hot, so R diverges wherever the greedy map cycles: it is reported as the
   fraction of start tokens whose greedy chain cycles before eos.
2. The closed form against simulation: for random chains and for the corpus chains, simulate
   the decoding chain, count immediate repeats, and compare with R (relative error, z-score).

Writes into a run folder (``runs/bench-repetition-<time>/`` by default); ``--results FILE`` merges
the figures into a results JSON such as ``benchmarks/results/repetition.json``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from kexue.analysis.repetition import (
    analyze,
    cycle_length_for,
    estimate_bigram,
    greedy_cycles,
    importance_weights,
    named_chain,
    simulate_repetition,
)
from kexue.bench.common import check_new_run_dir, check_results_file, copy_file
from kexue.data.text import load_corpus
from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError
from kexue.io import check_output_file, make_run_dir, read_json, write_json
from kexue.params import NonNegativeInt, check
from kexue.results import Figure, write_results

LEVELS = ("char", "word", "rebalanced")
# the three decoders of the results keys; greedy is reported separately
KEY_DECODERS = {"R_sample": "sample", "R_top_p90": "top_p:0.9", "R_top_k10": "top_k:10"}
SWEEP = ("top_k:2", "top_k:3", "top_k:5", "top_k:20", "top_k:50", "top_p:0.5", "top_p:0.7", "top_p:0.95", "temp:0.7")
COMMAND = "kexue bench repetition"


def level_sentences(level: str, corpus: str = "ptb", split: str = "train", max_sentences: int | None = None,
                    word_vocab: int | None = None, encoding: RebalancedEncoding | None = None,
                    threshold: float = 0.1, iterations: int = 10) -> tuple[list[list[str]], dict]:
    """Sentences of ``corpus`` as token lists at one level, and a small description.

    ``char``: characters of the words joined by spaces; ``word``: words (the ``word_vocab`` most
    frequent, the rest as ``<unk>``, when given); ``rebalanced``: characters after a rebalanced
    encoding (``encoding``, or one learned here with ``threshold`` / ``iterations``).
    """
    if level not in LEVELS:
        raise KexueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    sents = load_corpus(corpus, split)
    if max_sentences:
        sents = sents[:max_sentences]
    info: dict = {"level": level, "corpus": corpus, "split": split, "sentences": len(sents)}
    if level == "word":
        if word_vocab:
            keep = {w for w, _ in Counter(w for s in sents for w in s).most_common(word_vocab)}
            sents = [[w if w in keep else "<unk>" for w in s] for s in sents]
            info["word_vocab"] = word_vocab
        return sents, info
    chars = [list(" ".join(s)) for s in sents]
    if level == "char":
        return chars, info
    if encoding is None:
        encoding = RebalancedEncoding.learn(chars, threshold=threshold, iterations=iterations)
    info.update(threshold=threshold, rounds=len(encoding.rounds), merged_tokens=len(encoding.parts))
    return encoding.encode_corpus(chars), info


def study_level(sentences: list[list[str]], decoders: list[str], progress: Callable[[str], None] | None = None) -> dict:
    """Analytic numbers of the bigram chain of ``sentences`` under each decoder name (see named_chain)."""
    chain = estimate_bigram(sentences)
    out: dict = {"n": chain.P.shape[0], "tokens": int(chain.counts.sum()), "decoders": {}, "by_token": {}}
    for name in decoders:
        t0 = time.perf_counter()
        C = named_chain(chain.P, name)
        if name == "greedy":
            g = greedy_cycles(chain.P)
            start_cycles = float(chain.start[g.start_cycles].sum())  # from a sentence start (bos)
            row = {"cycle_fraction": g.cycle_fraction, "bos_cycle_probability": start_cycles,
                   "cycles": len(g.cycles), "cycle_lengths": sorted({len(c) for c in g.cycles}),
                   "example_cycles": [[chain.tokens[i] for i in c] for c in g.cycles[:5]]}
            a = analyze(C)
        else:
            a = analyze(C)
            row = {}
        row.update({k: v for k, v in a.as_dict().items() if k != "deterministic_cycle"})
        row["R"] = a.R if math.isfinite(a.R) else None
        row["R_upper"] = a.R_upper if math.isfinite(a.R_upper) else None
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


def monte_carlo_check(P, R: float, lam: float, seed: int, by_token: np.ndarray | None = None,
                      target_rel_se: float = 0.0125, min_chains: int = 1_000_000,
                      max_chains: int = 40_000_000) -> dict:
    """Simulate the chain and compare the repeat count with the exact R.

    Chains are added (in chunks) until the relative standard error reaches ``target_rel_se``
    (after at least ``min_chains``, at most ``max_chains``). At 1.25 % the 5 % agreement asked
    for is a 4-sigma band. The repeat count N of one chain is rare-event data, so with uniform
    starts the relative error is about sqrt(n / (chains · R)). Start tokens are therefore drawn
    from q ∝ 0.8·√r_i + 0.2·(short-cycle proxy, uniform floor) when the per-token terms
    ``by_token`` are given (√r_i minimises the variance of rare-event counts). The estimate
    N / q_s stays unbiased for the true Σ_k Tr(Q^k) whatever q is (q > 0 everywhere), so
    choosing q from the closed form does not make the check circular; it only makes it cheaper.
    """
    K = cycle_length_for(P, R=R, lam=lam)
    q = importance_weights(P)
    if by_token is not None and by_token.sum() > 0:
        root = np.sqrt(np.clip(by_token, 0, None))
        q = 0.8 * root / root.sum() + 0.2 * q
    t0 = time.perf_counter()
    mc = simulate_repetition(P, max_chains, K, seed=seed, start_weights=q, lam=lam,
                             rel_stderr=target_rel_se, min_chains=min_chains)
    return {"R": R, "R_mc": mc.value, "stderr": mc.stderr, "rel_error": mc.value / R - 1,
            "rel_stderr": mc.stderr / R, "z": mc.z_score(R), "chains": mc.n_chains, "k_max": K,
            "bias_bound": mc.bias_bound, "start_weights": "sqrt(r) mixture" if by_token is not None else "proxy",
            "seconds": time.perf_counter() - t0}


def run_study(quick: bool = False, seed: int = 0, corpus: str = "ptb", log: Callable[[str], None] = print,
              random_sizes: list[tuple[int, float]] | None = None, chains: tuple[int, int] | None = None) -> dict:
    """The whole study (analytic per level and decoder, Monte-Carlo checks); returns a JSON-able dict.

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
    sizes = random_sizes if random_sizes is not None else [(5, 0.3), (10, 1.0), (20, 0.1), (50, 0.5), (100, 0.05)] if quick else \
        [(5, 0.3), (5, 3.0), (10, 1.0), (20, 0.1), (20, 1.0), (50, 0.5), (100, 0.05), (100, 0.3), (300, 0.1), (1000, 0.05)]
    for i, (n, conc) in enumerate(sizes):
        P = random_chain(rng, n, conc)
        for dec in ("sample", "top_p:0.9", "top_k:3"):
            C = named_chain(P, dec)
            a = analyze(C)
            if not math.isfinite(a.R) or a.R <= 0:
                continue
            row = monte_carlo_check(C, a.R, a.lambda_1, seed=seed + 10 * i, by_token=a.by_token, max_chains=max_chains,
                                    min_chains=min_chains)
            row.update(n=n, concentration=conc, decoder=dec)
            detail["mc"]["random"].append(row)
            log(f"[repetition] mc random n={n} a={conc} {dec}: R={a.R:.4g} mc={row['R_mc']:.4g} "
                f"rel={row['rel_error']:+.3%} z={row['z']:+.2f}")
    # ... and the corpus chains
    for level in LEVELS:
        for dec in KEY_DECODERS.values():
            a = detail["levels"][level]["decoders"][dec]
            if a["R"] is None or a["R"] <= 0:
                continue
            C = named_chain(bigrams[level].P, dec)
            row = monte_carlo_check(C, a["R"], a["lambda_1"], seed=seed + 1000 + len(detail["mc"]["corpus"]),
                                    by_token=by_token[level].get(dec),
                                    max_chains=max_chains, min_chains=min_chains)
            row.update(level=level, decoder=dec)
            detail["mc"]["corpus"].append(row)
            log(f"[repetition] mc {level} {dec}: R={a['R']:.4g} mc={row['R_mc']:.4g} "
                f"rel={row['rel_error']:+.3%} z={row['z']:+.2f}")
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
            "R_decreases_with_k": all(a[1] >= b[1] for a, b in zip(ks, ks[1:])),
            "R_decreases_with_p": all(a[1] >= b[1] for a, b in zip(ps, ps[1:])),
            "greedy_worst": d["greedy"]["cycle_fraction"] > 0 or d["greedy"]["lambda_1"]
            >= max(v["lambda_1"] for k, v in d.items() if k != "greedy"),
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


def figures_of(detail: dict, command: str = COMMAND) -> list[Figure]:
    """The results.json figures of a study."""
    figs = []
    worst = max([abs(r["rel_error"]) for r in detail["mc"]["random"] + detail["mc"]["corpus"]], default=math.nan)
    figs.append(Figure("repetition.mc_rel_error_max", worst, None, None, command))
    for level, res in detail["levels"].items():
        d = res["decoders"]
        for key, dec in KEY_DECODERS.items():
            if d[dec]["R"] is not None:
                figs.append(Figure(f"repetition.ptb.{level}.{key}", d[dec]["R"], None, None, command))
        figs.append(Figure(f"repetition.ptb.{level}.greedy_cycle_fraction", d["greedy"]["cycle_fraction"],
                           None, None, command))
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
    all_k = sorted({int(k.split(":")[1]) for res in detail["levels"].values() for k in res["decoders"]
                    if k.startswith("top_k:")})
    axes[0].set_xscale("log")
    axes[0].set_xticks(all_k, [str(k) for k in all_k])
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set(yscale="log", xlabel="top-k  (dotted: sampling, no truncation)", ylabel="R = Σ Tr((P∘P)^k)",
                title="Harsher truncation (small k) raises R")
    axes[1].set(yscale="log", xlabel="top-p  (p = 1: sampling)", ylabel="R", title="R against nucleus mass p")
    axes[2].set(ylabel="λ_1(P∘P)", title="Largest eigenvalue of P∘P per decoder")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Repetition of PTB bigram decoders (kexue.fm/archives/8128); greedy cycles: "
                 + ", ".join(f"{lv} {detail['levels'][lv]['decoders']['greedy']['cycle_fraction']:.0%}" for lv in levels),
                 fontsize=10)
    return save_figure(fig, path)


def repetition(quick: bool = False, seed: NonNegativeInt = 0, out: Path | None = None,
               overwrite: bool = False, results: Path | None = None, details: Path | None = None,
               figure: Path | None = None, replot: bool = False) -> Path:
    """Corpus study and Monte-Carlo check of the repetition theory (archives/8128).

    Writes into the run folder ``out``: ``results.json`` (results schema), ``detail.json`` (every
    decoder, bound, simulation and claim) and the plot ``study.png``. Nothing outside it unless
    named: ``results`` merges the figures into that results JSON, ``details`` and ``figure`` copy
    the detail JSON and the plot there (the committed run: ``--results
    benchmarks/results/repetition.json --details benchmarks/results/repetition_detail.json --figure
    docs/figures/repetition_study.png``).

    Args:
        quick: 5k sentences and a 2k-word vocabulary, fewer decoders and random chains (minutes).
        seed: seeds the simulations and random chains.
        out: run folder (default runs/bench-repetition-<time>/).
        overwrite: replace an existing run folder ``out``.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/repetition.json).
        details: also copy the detail JSON here; with ``replot``, the detail JSON to redraw from.
        figure: also copy the plot (PNG) here; with ``replot``, where to draw it.
        replot: only redraw ``figure`` from the detail JSON ``details`` of an earlier run (no
            computation, no run folder).
    Returns:
        The path of the run's results.json (with ``replot``: of the figure).
    """
    if replot:
        check(figure is not None and details is not None,
              "--replot redraws --figure from the detail JSON of an earlier run: give both --details and --figure")
        check(out is None and results is None, "--replot computes nothing: it takes no --out and no --results")
        check_output_file(figure, "--figure")
        detail = read_json(details, "--details")
        try:
            plot_study(detail, Path(figure))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise KexueError(f"--details {details} does not hold a repetition study (the detail.json of a run)") from None
        print(f"[repetition] redrew {figure} from {details}")
        return Path(figure)
    config = {"quick": quick, "seed": seed, "results": results, "details": details,
              "figure": figure, "replot": replot}
    check_new_run_dir(out, overwrite)
    check_results_file(results)
    check_output_file(details, "--details")
    check_output_file(figure, "--figure")
    out = make_run_dir(out, "bench-repetition", config, overwrite=overwrite)
    detail = run_study(quick=quick, seed=seed)
    detail["note"] = "measured on a shared 2-core CPU machine; times are indicative only"
    figures = figures_of(detail)
    path = write_results(out / "results.json", figures)
    write_json(out / "detail.json", jsonable(detail))
    plot_study(detail, out / "study.png")
    if results is not None:
        write_results(results, figures, merge=True)
    for src, dst in ((out / "detail.json", details), (out / "study.png", figure)):
        if dst is not None:
            copy_file(src, dst)
    worst = max(abs(r["rel_error"]) for r in detail["mc"]["random"] + detail["mc"]["corpus"])
    zmax = max(abs(r["z"]) for r in detail["mc"]["random"] + detail["mc"]["corpus"])
    print(f"[repetition] Monte-Carlo vs closed form: max |rel error| {worst:.2%}, max |z| {zmax:.2f}")
    for level, res in detail["levels"].items():
        d = res["decoders"]
        print(f"[repetition] {level:10s} n={res['n']:5d}  R sample {_fmt(d['sample']['R'])}  top-p .9 "
              f"{_fmt(d['top_p:0.9']['R'])}  top-k 10 {_fmt(d['top_k:10']['R'])}  greedy cycles "
              f"{d['greedy']['cycle_fraction']:.1%}")
    written = [p for p in (results, details, figure) if p is not None]
    print(f"[repetition] wrote {out}" + (f" and {', '.join(map(str, written))}" if written else ""))
    return path


def _fmt(x: float | None) -> str:
    return "diverges" if x is None else f"{x:.4g}"


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
