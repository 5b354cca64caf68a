"""Reproduce section "text from a masked LM" (article 6, kexue.fm/archives/8119; Wang & Cho 2019).

Fine-tunes the MiniLM encoder (new MLM head tied to its input embeddings) on PTB, draws
pseudo-Gibbs samples with random-scan, left-to-right and parallel updates, and scores them:
BLEU against PTB test sentences (each sample against all of them), self-BLEU, distinct-n.
Wang & Cho's figures are for BERT-base on WikiText-103 / BookCorpus: a different model and
corpus, shown for scale only. Nothing here samples a joint distribution: MLM conditionals need
not have one (the MRF claim was withdrawn), so the chain is pseudo-Gibbs.
"""

from __future__ import annotations

from pathlib import Path

from kexue.provenance import describe_machine
from kexue.recipes.mlm import MLMTrainSettings, sample, train_mlm
from kexue.reproduce.report import SectionResult
from kexue.results import Figure

SOURCE = "Wang & Cho 2019, nyu-dl/bert-gen notebook: BERT-base, length 40, vs WikiText-103 (other model and corpus)"
PUBLISHED = {"bleu_vs_corpus": 7.80, "self_bleu": 10.06}
SETTINGS = {  # quick: the pipeline end to end in a short time (timed in the report); full: the measured setting
    True: dict(train_steps=20, batch_size=16, chains=16, steps=40, burn_in=20, references=500),
    False: dict(train_steps=1000, batch_size=32, chains=128, steps=400, burn_in=200, references=2000),
}
ORDERS = ("random", "sequential", "parallel")


def run(out: Path, quick: bool = True) -> SectionResult:
    s = SETTINGS[quick]
    settings = MLMTrainSettings(steps=s["train_steps"], batch_size=s["batch_size"], eval_every=0, eval_sentences=200)
    trained = train_mlm(corpus="ptb", settings=settings, out=out / "runs" / "mlm")
    figures, samples = [trained.figures[0]], {}
    for order in ORDERS:
        got = sample(
            model=trained.out, chains=s["chains"], steps=s["steps"], burn_in=s["burn_in"], order=order, top_k=100,
            corpus="ptb", references=s["references"], label=order, out=out / "runs" / f"gibbs-{order}",
            show_progress=False,
        )  # fmt: skip
        samples[order] = got.samples
        for f in got.figures:
            if f.key.startswith("gibbs.real_text.") and order != ORDERS[0]:
                continue  # the same real sentences for every order
            metric = f.key.rsplit(".", 1)[1]
            pub = PUBLISHED.get(metric) if f.key.startswith("gibbs.random.") else None
            figures.append(Figure(f.key, f.value, published=pub, source=SOURCE if pub else None, command=f.command))
    shown = "\n".join(f"- {t}" for t in samples["random"][:5])
    notes = (
        f"Setting: MiniLM-L6-H384 encoder + new tied MLM head, {s['train_steps']} fine-tuning steps on PTB "
        f"(validation MLM loss {trained.valid_loss:.2f}) on {describe_machine()}; {s['chains']} chains per order, "
        f"{s['steps']} steps, burn-in {s['burn_in']} with the full distribution, then top-k 100; lengths 8-32 "
        "WordPiece tokens; BLEU against the first PTB test sentences; `real_text` scores as many real PTB test "
        "sentences of the same lengths the same way. The published numbers are BERT-base on "
        "WikiText-103 (other model, corpus and training budget): for scale only. `parallel` redraws 15 % of the "
        "positions at once and is not a Gibbs update. Random-scan samples:\n\n" + shown
    )
    return SectionResult(
        name="gibbs",
        title="6. Text from a masked LM by pseudo-Gibbs sampling (kexue.fm/archives/8119)",
        figures=figures,
        notes=notes,
        headline=["gibbs.random.bleu_vs_corpus", "gibbs.random.self_bleu"],
    )
