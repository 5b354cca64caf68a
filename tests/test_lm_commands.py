"""`kexue lm train / generate / termination` end to end on a tiny corpus folder."""

import json

import pytest

from kexue.cli import main
from kexue.commands import lm

WORDS = "the cat sat on a mat and dog ran to house".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    lines = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12 + i % 5)) for i in range(120)]
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_train_generate_and_termination(corpus, tmp_path, capsys):
    runs = {}
    for head in ("softmax", "st"):
        runs[head] = lm.train(head=head, eps=0.1, dim=16, layers=1, dropout=0.0, corpus=str(corpus), steps=30,
                              batch_size=4, bptt=8, lr=1e-2, eval_every=0, out=tmp_path / head)
        assert (runs[head] / "model.safetensors").is_file()
    texts = lm.generate(runs["st"], prompt="the cat", decoder="greedy", max_new_tokens=30)
    assert len(texts) == 1
    res = tmp_path / "termination.json"
    flat = lm.termination(models=f"vanilla={runs['softmax']},st={runs['st']}", prefixes=5, cap=20,
                          corpus=str(corpus), results=res, out=tmp_path / "term")
    # eps = 0.1: p(eos) >= 1 - 0.9^(t+1), so every decoder of the self-terminating model stops within 20
    for dec in lm.DECODERS:
        assert flat[f"termination.st.{dec}.nonterminating"] == 0.0, dec
        assert 0.0 <= flat[f"termination.vanilla.{dec}.nonterminating"] <= 1.0
    assert flat["termination.st.greedy.mean_length"] <= 7
    data = json.loads(res.read_text())
    assert data["termination.vanilla.ppl"]["value"] == pytest.approx(flat["termination.vanilla.ppl"])
    assert "termination: 2 models x 8 decoders" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["lm", "generate", "--run", str(tmp_path), "--prompt", "a b"])
    assert e.value.code == 2
    assert "kexue: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lm", "termination", "--models", "nonsense", "--out", str(tmp_path / "t")])


def test_termination_rows_report_repetition_of_each_decoder():
    import torch

    from kexue.commands.lm import termination_rows
    from kexue.generation import DecodeOutput

    eos = 3
    tokens = torch.tensor([[5, 6, 5, 6, 5, 6, 5, 6], [7, 8, 9, eos, 0, 0, 0, 0]])
    out = DecodeOutput(tokens, torch.zeros(2, 8), torch.tensor([8, 4]), torch.tensor([False, True]),
                       ["max_length", "eos"], torch.zeros(2))
    row = termination_rows(out, eos)
    assert row["nonterminating"] == 0.5 and row["mean_length"] == 6.0
    assert row["loop_fraction"] == 0.5           # the (5 6)* row loops, the other does not
    assert 0 < row["rep_w"] < 1 and row["seq_rep_4"] > 0
