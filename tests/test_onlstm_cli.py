"""`kexue onlstm train / parse / eval` end to end on a tiny model, and the bench's reference cell."""

import json

import pytest
import torch

from kexue.analysis.trees import baseline_scores, leaves_of
from kexue.bench.onlstm import ReferenceONLSTM
from kexue.cli import main
from kexue.commands.onlstm import eval as onlstm_eval
from kexue.commands.onlstm import grammar_corpus, parse, train
from kexue.errors import KexueError
from kexue.nn.on_lstm import ONLSTM


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(corpus="grammar", emb=12, hidden=16, layers=3, chunk=4, steps=6, batch_size=8, bptt=12,
          grammar_sentences=300, eval_every=0, ckpt_every=3, threads=1, out=out)
    return out


def test_train_parse_eval(tiny_run, tmp_path, capsys):
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["test_ppl"] > 1
    lines = parse(tiny_run, sentences=["the dog sees a cat", "they sleep"], draw=True, out=tmp_path / "p")
    assert lines[0].count("(") == lines[0].count(")") == 4  # binary tree over 5 words: 4 internal nodes
    assert sorted(lines[0].replace("(", " ").replace(")", " ").split()) == sorted("the dog sees a cat".split())
    assert (tmp_path / "p" / "tree_000.png").stat().st_size > 0
    res = tmp_path / "r.json"
    scores = onlstm_eval(tiny_run, grammar=40, results=res, out=tmp_path / "e")
    gold = grammar_corpus("test", 40)
    base = baseline_scores([g.tree for g in gold])
    assert scores["all"]["right_branching"] == pytest.approx(100 * base["right_branching"])
    saved = json.loads(res.read_text())
    assert saved["onlstm.synthetic.f1_right_branching"]["value"] == pytest.approx(100 * base["right_branching"])
    assert all(leaves_of(g.tree) == g.words for g in gold)


def test_cli_user_errors_exit_2(tiny_run, capsys):
    with pytest.raises(SystemExit) as e:
        main(["onlstm", "eval", "--model", str(tiny_run)])
    assert e.value.code == 2
    assert "kexue: error: give exactly one of" in capsys.readouterr().err
    with pytest.raises(KexueError):
        parse(tiny_run / "nope", sentences=["a b"])


def test_reference_loop_matches_ours_with_copied_weights():
    torch.manual_seed(0)
    ours, ref = ONLSTM(6, [10, 10], 5), ReferenceONLSTM(6, [10, 10], 5)
    with torch.no_grad():
        for layer, cell in zip(ours.layers, ref.cells):
            cell.ih.weight.copy_(layer.weight_ih)
            cell.ih.bias.copy_(layer.bias)
            cell.hh.weight.copy_(layer.weight_hh)
            cell.hh.bias.zero_()
    x = torch.randn(3, 7, 6)
    torch.testing.assert_close(ours(x)[0], ref(x))
