"""Reproduce section "onlstm": ON-LSTM LM, trees induced on a generated grammar, a short PTB run.

Quick: a small 3-layer ON-LSTM on generated grammar sentences, F1 of its induced trees against
the gold trees and the baselines, and a short PTB run of ON-LSTM and the LSTM baseline with the
same budget. Full: the settings of the committed figures (docs/onlstm.md).
"""

from __future__ import annotations

from pathlib import Path

from kexue.analysis.trees import draw_tree, to_brackets
from kexue.commands.onlstm import grammar_corpus, induce, load_lm, score_figures, score_trees, train
from kexue.io import save_figure
from kexue.reproduce.report import SectionResult
from kexue.results import Figure

QUICK = {"grammar": dict(emb=60, hidden=120, chunk=5, layers=3, steps=150, batch_size=64, bptt=35, lr=5e-3,
                         grammar_sentences=5000),
         "ptb": dict(emb=64, hidden=128, chunk=8, layers=2, steps=60, batch_size=32, bptt=35, lr=5e-3),
         "test_sentences": 300}
FULL = {"grammar": dict(emb=100, hidden=300, chunk=5, layers=3, steps=400, batch_size=64, bptt=35, lr=3e-3,
                        grammar_sentences=20000),
        "ptb": dict(emb=100, hidden=200, chunk=10, layers=2, steps=400, batch_size=32, bptt=35, lr=3e-3),
        "test_sentences": 500}
REGULARISERS = {"grammar": dict(dropout=0.2, dropouth=0.2, dropouti=0.2, dropoute=0.05, wdrop=0.2),
                "ptb": dict(dropout=0.2, dropouth=0.1, dropouti=0.2, dropoute=0.0, wdrop=0.2)}


def _flags(d: dict) -> str:
    return " ".join(f"--{k} {v}" for k, v in d.items())


def _f1_figure(scores: dict, out: Path) -> str:
    import matplotlib.pyplot as plt

    row = scores["all"]
    keys = [k for k in row if k.startswith("layer")] + ["mean", "right_branching", "left_branching", "random"]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(len(keys)), [row[k] for k in keys],
           color=["tab:blue"] * (len(keys) - 3) + ["0.5", "0.65", "0.8"])
    ax.set_xticks(range(len(keys)), [k.replace("_branching", "-br.") for k in keys], fontsize=8)
    ax.set_ylabel("unlabeled F1 (%)")
    ax.set_title(f"trees induced on {scores['sentences']} generated sentences", fontsize=10)
    path = out / "figures" / "onlstm_f1.png"
    save_figure(fig, path)
    return str(path.relative_to(out))


def run(out: Path, quick: bool = True) -> SectionResult:
    s = QUICK if quick else FULL
    runs = out / "onlstm"
    g_args = {**s["grammar"], **REGULARISERS["grammar"]}
    train(corpus="grammar", out=runs / "grammar", eval_every=0, ckpt_every=0, threads=1, **g_args)
    lm, vocab = load_lm(runs / "grammar")
    gold = grammar_corpus("test", s["test_sentences"])
    scores = score_trees(lm, vocab, gold)
    g_cmd = (f"kexue onlstm train --corpus grammar {_flags(g_args)} --out RUN && "
             f"kexue onlstm eval --model RUN --grammar {s['test_sentences']}")
    figures = score_figures(scores, "synthetic", g_cmd)

    p_args = {**s["ptb"], **REGULARISERS["ptb"]}
    ppl = {}
    for cell in ("onlstm", "lstm"):
        ppl[cell] = train(corpus="ptb", cell=cell, out=runs / f"ptb-{cell}", eval_every=0, ckpt_every=0,
                          threads=1, **p_args)
    p_cmd = f"kexue onlstm train --corpus ptb --cell CELL {_flags(p_args)}"
    figures += [Figure("onlstm.ptb.ppl", ppl["onlstm"]["test_ppl"], 56.17,
                       "Shen et al. 2019, Table 1 (25M params, 1000 epochs)", p_cmd.replace("CELL", "onlstm")),
                Figure("onlstm.ptb.lstm_ppl", ppl["lstm"]["test_ppl"], 57.3,
                       "AWD-LSTM in Shen et al. 2019, Table 1", p_cmd.replace("CELL", "lstm"))]

    images = [_f1_figure(scores, out)]
    examples = sorted(gold[:60], key=lambda g: -len(g.words))[:3]
    trees = induce(lm, vocab, [g.words for g in examples], ["middle"])["middle"]
    lines = []
    for k, (g, t) in enumerate(zip(examples, trees)):
        lines.append(f"- induced `{to_brackets(t)}`\n  gold `{g.bracketed}`")
        path = out / "figures" / f"onlstm_tree_{k}.png"
        save_figure(draw_tree(t, title="induced (middle layer)"), path)
        images.append(str(path.relative_to(out)))
    row = scores["all"]
    best = max((v for k, v in row.items() if k.startswith("layer")))
    margin = best - row["right_branching"]
    notes = (
        f"Generated grammar ({s['grammar']['grammar_sentences']} training sentences, {scores['sentences']} test "
        f"sentences): best layer F1 {best:.1f} vs right-branching {row['right_branching']:.1f} "
        f"({margin:+.1f} points; target +15: {'met' if margin >= 15 else 'missed'}). Distance sd per layer: "
        + ", ".join(f"{x:.3f}" for x in scores["distance_sd"]) + ".\n\n"
        f"PTB: {p_args['layers']} x {p_args['hidden']} hidden, {p_args['steps']} steps of batch "
        f"{p_args['batch_size']} x {p_args['bptt']} ({ppl['onlstm']['epochs']:.2f} epochs) for both cells on a "
        "shared 2-core CPU; the paper trains 25M parameters for 1000 epochs, so the perplexities are far above "
        "56.17 and only the comparison between the two cells under the same budget means something.\n\n"
        "Example trees (middle layer):\n\n" + "\n".join(lines))
    headline = ["onlstm.synthetic.f1_best_layer", "onlstm.synthetic.f1_right_branching", "onlstm.ptb.*ppl"]
    return SectionResult("onlstm", "2. ON-LSTM (kexue.fm/archives/6621)", figures, notes, images, headline=headline)
