"""Section 7 of ``kexue reproduce``: theory of repetition (kexue.fm/archives/8128; Fu et al., AAAI 2021)."""

from __future__ import annotations

from pathlib import Path

from kexue.io import write_json
from kexue.provenance import command_line
from kexue.recipes.repetition import figures_of, jsonable, plot_study, run_study
from kexue.reproduce.report import SectionResult

TITLE = "7. Theory of repetition (kexue.fm/archives/8128)"


def _notes(detail: dict, quick: bool) -> str:
    lv = detail["levels"]
    mc = detail["mc"]["random"] + detail["mc"]["corpus"]
    worst = max(abs(r["rel_error"]) for r in mc)
    zmax = max(abs(r["z"]) for r in mc)
    rse = max(r["rel_stderr"] for r in mc)
    setting = (
        "quick: first 5,000 PTB training sentences, words outside the 2,000 most frequent as <unk>"
        if quick
        else "full: all 42k PTB training sentences, 10k words"
    )
    lines = [
        (
            f"Bigram chains P estimated by maximum likelihood from PTB ({setting}); eos ends each sentence. "
            "R = Σ_k Tr((P∘P)^k) is computed exactly (a linear solve per strongly connected block of P∘P); "
            "decoders are applied to each row over tokens + eos and renormalised. The paper has no R numbers "
            "(Su's post has no experiments), so there is no published column; the claims are checked qualitatively."
        ),
        "",
        (
            f"**Closed form vs simulation**: {len(mc)} chains (random Dirichlet chains and the PTB chains); "
            f"max |relative error| {worst:.2%}, max |z| {zmax:.2f}, with relative standard errors up to {rse:.2%} "
            "(chains are added until the relative standard error reaches 1.25 %, within a cap; start tokens are "
            "drawn ∝ √r_i, which leaves the estimate unbiased). The neglected tail Σ_{k>K} Tr(Q^k) is bounded "
            "below 0.1 % of R (K at most 400)."
        ),
        "",
        (
            "| level | n | mean Σ_j P_ij² | λ_1 sample | R sample | R top-p 0.9 | R top-k 10 | R/n sample "
            "| greedy: start tokens that cycle |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in lv.items():
        d = res["decoders"]
        lines.append(
            f"| {name} | {res['n']} | {d['sample']['mean_concentration']:.3f} | {d['sample']['lambda_1']:.4f} | "
            f"{d['sample']['R']:.4f} | {d['top_p:0.9']['R']:.4f} | {d['top_k:10']['R']:.4f} | "
            f"{d['sample']['R_per_token']:.2e} | {d['greedy']['cycle_fraction']:.1%} |"
        )
    cl = detail["claims"]
    lines += ["", "**Claims** (archives/8128 and the paper):"]

    def yes(b: bool) -> str:
        return "yes" if b else "**no**"

    def lower(b: bool) -> str:
        return "lower" if b else "NOT lower"

    for lvl, c in cl.items():
        if lvl not in lv:
            continue
        d = lv[lvl]["decoders"]
        ps = sorted((float(k.split(":")[1]), v["R"]) for k, v in d.items() if k.startswith("top_p:") and v["R"])
        ks = sorted((int(k.split(":")[1]), v["R"]) for k, v in d.items() if k.startswith("top_k:") and v["R"])
        lines.append(
            f"- {lvl}: top-k 10 and top-p 0.9 raise R above sampling: {yes(c['truncation_raises_R'])}; "
            f"R falls as k grows: {yes(c['R_decreases_with_k'])} ("
            + ", ".join(f"k={k}: {r:.3g}" for k, r in ks)
            + f"); R falls as p grows: "
            f"{yes(c['R_decreases_with_p'])} (" + ", ".join(f"p={p}: {r:.3g}" for p, r in ps) + ")."
        )
    lines.append(
        "- greedy is worst: its chain is a deterministic map, R diverges wherever it cycles; share of start "
        "tokens whose greedy chain cycles before eos: "
        + ", ".join(f"{k} {v['decoders']['greedy']['cycle_fraction']:.1%}" for k, v in lv.items())
        + "."
    )
    for other in ("word", "rebalanced"):
        c = cl.get(f"{other}_flatter_than_char")
        if c:
            lines.append(
                f"- {other} rows flatter than characters: mean Σ_j P_ij² {lower(c['mean_concentration'])}, "
                f"λ_1 {lower(c['lambda_1'])}, R per token {lower(c['R_per_token'])}, "
                f"total R {'lower' if c['R'] else 'higher'}."
            )
    lines += [
        "",
        (
            "R sums over every token of the vocabulary, so a larger vocabulary adds terms: compare levels by "
            "λ_1 and R/n as well as by R. Which tokens carry R under sampling (r_i = Σ_k ((P∘P)^k)_ii):"
        ),
    ]
    for name, res in lv.items():
        s = res["decoders"]["sample"]
        if s.get("top_tokens"):
            toks = ", ".join(f"{t!r} {v:.3g}" for t, v in s["top_tokens"])
            lines.append(f"- {name}: {toks}; the top 10 tokens carry {s['top10_share']:.0%} of R.")
    return "\n".join(lines)


def run(out: Path, quick: bool) -> SectionResult:
    """Corpus study + Monte-Carlo check; figures/repetition_study.png and repetition_detail.json.

    The same study as ``kexue bench repetition [--quick]``, whose command the figures carry.
    """
    from kexue.bench.repetition import repetition as bench_repetition  # its signature: the flags and defaults

    detail = run_study(quick=quick)
    command = command_line("bench repetition", bench_repetition, {"quick": quick})
    image = Path("figures") / "repetition_study.png"
    plot_study(detail, out / image)
    write_json(out / "repetition_detail.json", jsonable(detail))
    return SectionResult(
        name="repetition",
        title=TITLE,
        figures=figures_of(detail, command),
        notes=_notes(detail, quick),
        images=[str(image)],
        headline=["repetition.mc_rel_error_max", "repetition.ptb.*.R_top_p90"],
    )
