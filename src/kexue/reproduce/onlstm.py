"""Reproduce section "onlstm": ON-LSTM LM, trees induced on a generated grammar, a short PTB run.

Quick: a small 3-layer ON-LSTM on generated grammar sentences, F1 of its induced trees against
the gold trees and the baselines, and a short PTB run of ON-LSTM and the LSTM baseline with the
same budget. Full: the settings of the committed figures (docs/onlstm.md).
"""

from __future__ import annotations

from pathlib import Path

from kexue.analysis.trees import draw_tree, to_brackets
from kexue.data.treebank import grammar_corpus
from kexue.io import save_figure
from kexue.provenance import describe_machine
from kexue.recipes.onlstm import ONLSTMTrainSettings, evaluate, induce, load_onlstm, train_onlstm
from kexue.reproduce.report import SectionResult

QUICK = {
    "grammar": dict(
        emb=60, hidden=120, chunk=5, layers=3, steps=150, batch_size=64, bptt=35, lr=5e-3, grammar_sentences=5000
    ),
    "ptb": dict(emb=64, hidden=128, chunk=8, layers=2, steps=60, batch_size=32, bptt=35, lr=5e-3),
    "test_sentences": 300,
}
FULL = {
    "grammar": dict(
        emb=100, hidden=300, chunk=5, layers=3, steps=400, batch_size=64, bptt=35, lr=3e-3, grammar_sentences=20000
    ),
    "ptb": dict(emb=100, hidden=200, chunk=10, layers=2, steps=400, batch_size=32, bptt=35, lr=3e-3),
    "test_sentences": 500,
}
REGULARISERS = {
    "grammar": dict(dropout=0.2, dropouth=0.2, dropouti=0.2, dropoute=0.05, wdrop=0.2),
    "ptb": dict(dropout=0.2, dropouth=0.1, dropouti=0.2, dropoute=0.0, wdrop=0.2),
}


def _f1_figure(scores: dict, out: Path) -> str:
    import matplotlib.pyplot as plt

    row = scores["all"]
    keys = [k for k in row if k.startswith("layer")] + ["mean", "right_branching", "left_branching", "random"]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(len(keys)), [row[k] for k in keys], color=["tab:blue"] * (len(keys) - 3) + ["0.5", "0.65", "0.8"])
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
    grammar_run = train_onlstm(
        corpus="grammar",
        settings=ONLSTMTrainSettings(eval_every=0, ckpt_every=0, **g_args),
        threads=1,
        out=runs / "grammar",
    )
    # the F1 rows carry the `onlstm eval` command that scores this run (its own command is in the run folder)
    evaluation = evaluate(model=grammar_run.out, grammar=s["test_sentences"], out=runs / "grammar-eval")
    scores, figures = evaluation.scores, list(evaluation.figures)
    lm, vocab = load_onlstm(grammar_run.out)
    gold = grammar_corpus("test", s["test_sentences"])

    p_args = {**s["ptb"], **REGULARISERS["ptb"]}
    ptb = {}
    for cell in ("onlstm", "lstm"):
        ptb[cell] = train_onlstm(
            corpus="ptb",
            settings=ONLSTMTrainSettings(cell=cell, eval_every=0, ckpt_every=0, **p_args),
            threads=1,
            out=runs / f"ptb-{cell}",
        )
        figures += ptb[cell].figures  # onlstm.ptb.ppl / onlstm.ptb.lstm_ppl, the paper's Table 1 beside
    ppl = {cell: run.summary for cell, run in ptb.items()}

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
        + ", ".join(f"{x:.3f}" for x in scores["distance_sd"])
        + ".\n\n"
        f"PTB: {p_args['layers']} x {p_args['hidden']} hidden, {p_args['steps']} steps of batch "
        f"{p_args['batch_size']} x {p_args['bptt']} ({ppl['onlstm']['epochs']:.2f} epochs) for both cells on "
        f"{describe_machine()}; the paper trains 25M parameters for 1000 epochs, so the perplexities are far above "
        "56.17 and only the comparison between the two cells under the same budget means something.\n\n"
        "Example trees (middle layer):\n\n" + "\n".join(lines)
    )
    headline = ["onlstm.synthetic.f1_best_layer", "onlstm.synthetic.f1_right_branching", "onlstm.ptb.*ppl"]
    return SectionResult("onlstm", "2. ON-LSTM (kexue.fm/archives/6621)", figures, notes, images, headline=headline)
