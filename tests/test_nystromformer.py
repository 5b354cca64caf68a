"""ListOps generator and the Nyströmformer classifier."""

import os
import random
import shlex

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from kexue.data import listops as lo
from kexue.errors import KexueError
from kexue.models.nystromformer import NystromformerClassifier, accuracy, classification_loss
from kexue.training import TensorBatches, TrainConfig, fit


@pytest.mark.parametrize(
    "expr, value",
    [
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MED 1 2 3 4 ]", 2),  # median 2.5, rounded down
        ("[SM 5 6 7 ]", 8),
        ("[MED 3 [SM 9 9 ] 1 ]", 3),
        ("[MIN [MAX 1 8 ] [MED 7 5 6 ] ]", 6),
    ],
)
def test_evaluate_hand_made(expr, value):
    assert lo.evaluate(expr.split()) == value


def test_evaluate_rejects_bad_expressions():
    with pytest.raises(KexueError):
        lo.evaluate("[MAX 1 2".split())
    with pytest.raises(KexueError):
        lo.evaluate("[MAX 1 x ]".split())


def test_generate_lengths_labels_and_determinism():
    seqs, labels = lo.generate(200, 30, 90, max_depth=6, seed=3)
    assert all(30 <= len(s) <= 90 for s in seqs)
    assert [lo.evaluate(s) for s in seqs] == labels  # stack evaluator vs recursive generator
    assert len(set(labels)) == 10
    assert lo.generate(200, 30, 90, max_depth=6, seed=3) == (seqs, labels)
    assert max(len(s) for s in lo.generate(3, 1500, 2000, seed=0)[0]) <= 2000
    tokens, y = lo.to_tensors(seqs[:2], labels[:2], 100)
    assert tokens.shape == (2, 100) and (tokens[0, len(seqs[0]) :] == 0).all() and (tokens[0, : len(seqs[0])] > 0).all()


def _tiny(kind, **kw):
    torch.manual_seed(0)
    return NystromformerClassifier(
        len(lo.VOCAB), 10, 64, dim=16, depth=2, heads=2, attention=kind, num_landmarks=kw.pop("m", 8), dropout=0.0, **kw
    )


@pytest.mark.parametrize("leaf_p", [0.75, 0.3])
def test_leaf_probability_is_the_one_asked_for(leaf_p):
    # With room to spare and max_depth 2, each argument of the root is a digit with probability
    # leaf_p and an operator otherwise (LRA: VALUE_P = 0.25 is the operator probability).
    rng = random.Random(0)
    digits = operators = 0
    for _ in range(3000):
        tokens, value = lo._tree(rng, 0, 2, 10, leaf_p, 10_000)
        assert tokens[0] in lo.OPERATORS and lo.evaluate(tokens) == value  # the root is an operator
        level = 0
        for tok in tokens:
            if level == 1 and tok in lo.OPERATORS:
                operators += 1
            elif level == 1 and tok.isdigit():
                digits += 1
            level += 1 if tok in lo.OPERATORS else -1 if tok == "]" else 0
    assert digits / (digits + operators) == pytest.approx(leaf_p, abs=0.01)


def test_nystrom_blocks_equal_exact_blocks_when_sequence_fits_in_landmarks():
    exact, nystrom = _tiny("exact"), _tiny("nystrom", conv_kernel=None, m=64)
    nystrom.load_state_dict(exact.state_dict())  # same parameter names without the conv
    tokens, _ = lo.to_tensors(*lo.generate(4, 20, 60, max_depth=4, seed=1), 64)
    torch.testing.assert_close(nystrom(tokens), exact(tokens), rtol=1e-5, atol=1e-5)
    mixed = _tiny(["nystrom", "exact"], conv_kernel=None)
    assert [type(b.attn).__name__ for b in mixed.blocks] == ["NystromAttention", "ExactAttention"]
    # with exact_conv the exact blocks carry the same conv skip: same parameters, same outputs
    exact_c, nystrom_c = _tiny("exact", conv_kernel=5, exact_conv=True), _tiny("nystrom", conv_kernel=5, m=64)
    assert "blocks.0.attn.conv.weight" in exact_c.state_dict() and "blocks.0.attn.conv.weight" not in exact.state_dict()
    nystrom_c.load_state_dict(exact_c.state_dict())
    torch.testing.assert_close(nystrom_c(tokens), exact_c(tokens), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(exact_c(tokens), exact(tokens))


@pytest.mark.parametrize("kind", ["nystrom", "exact"])
def test_classifier_padding_invariance(kind):
    model = _tiny(kind, conv_kernel=5, exact_conv=True).eval()
    seqs, labels = lo.generate(3, 30, 50, max_depth=4, seed=2)
    tokens, _ = lo.to_tensors(seqs, labels, 50)
    longer, _ = lo.to_tensors(seqs, labels, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(longer), model(tokens), rtol=1e-5, atol=1e-5)
        alone = model(tokens[:1, : len(seqs[0])])
        torch.testing.assert_close(model(tokens)[:1], alone, rtol=1e-5, atol=1e-5)


def test_tiny_training_learns():
    # one-operator expressions ([MAX 3 8 1 ]): the value is learnable in a few dozen steps
    x, y = lo.to_tensors(*lo.generate(512, 6, 12, max_depth=1, seed=0), 12)
    model = NystromformerClassifier(
        len(lo.VOCAB),
        10,
        12,
        dim=32,
        depth=1,
        heads=2,
        attention="nystrom",
        num_landmarks=4,
        conv_kernel=3,
        dropout=0.0,
    )
    with torch.no_grad():
        before = float(classification_loss(model, (x, y))[0])
    fit(model, classification_loss, TensorBatches(x, y, batch_size=64), TrainConfig(steps=60, lr=3e-3, progress=False))
    with torch.no_grad():
        after = float(classification_loss(model, (x, y))[0])
    assert after < before - 0.3, (before, after)
    assert accuracy(model, x, y) > 0.3


def test_longest_expression_bounds_the_generator():
    assert lo.longest_expression(1, 10) == 12 and lo.longest_expression(2, 2) == 10  # [SM [MAX 1 2 ] [MIN 3 4 ] ]
    assert lo.longest_expression(10_000, 10) == 2**40  # capped, and fast
    seqs, _ = lo.generate(50, 4, 8, max_depth=2, max_args=2, seed=0)
    assert max(map(len, seqs)) <= lo.longest_expression(2, 2)
    with pytest.raises(KexueError, match="no ListOps expression"):
        lo.generate(5, 13, 20, max_depth=1, max_args=10)  # would loop for 10k tries before
    with pytest.raises(KexueError, match="no ListOps expression"):
        lo.generate(5, 2, 3)


LISTOPS = [
    "--steps",
    "2",
    "--train_size",
    "16",
    "--test_size",
    "8",
    "--min_len",
    "8",
    "--max_len",
    "32",
    "--dim",
    "8",
    "--heads",
    "2",
    "--depth",
    "1",
    "--num_landmarks",
    "4",
    "--conv_kernel",
    "3",
    "--batch_size",
    "4",
]


def test_listops_and_errors_commands_end_to_end(tmp_path):
    import json

    from kexue.cli import main
    from kexue.io import run_config

    pytest.importorskip("nystrom_attention")
    pytest.importorskip("transformers")
    run = tmp_path / "run"
    main(["nystrom", "listops", *LISTOPS, "--out", str(run)])
    command, config = run_config(run)
    assert command == "nystrom-listops" and config["dim"] == 8 and config["attention"] == "both"
    accs = json.loads((run / "summary.json").read_text())
    assert {"acc_nystrom", "acc_exact", "majority_class"} <= set(accs)
    # the saved config reruns it, and resuming the finished run changes nothing
    main(["nystrom", "listops", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "again")])
    assert json.loads((tmp_path / "again" / "summary.json").read_text()) == accs
    main(["nystrom", "listops", "--config", str(run / "config.yaml"), "--out", str(run), "--resume"])
    assert json.loads((run / "summary.json").read_text()) == accs
    # the error study writes only the files it is given
    results, figure = tmp_path / "res" / "nystrom.json", tmp_path / "fig" / "errors.png"
    main(
        [
            "nystrom",
            "errors",
            "--run",
            str(run),
            "--length",
            "16",
            "--landmarks+",
            "4",
            "--landmarks+",
            "8",
            "--num_sequences",
            "2",
            "--results",
            str(results),
            "--figure",
            str(figure),
        ]
    )
    data = json.loads(results.read_text())
    assert set(data) == {
        f"nystrom.trained_listops.n16.m{m}.rel_error_{name}" for m in (4, 8) for name in ("ours", "lucidrains", "hf")
    }
    assert all(0 <= v["value"] < 2 for v in data.values())
    assert figure.read_bytes()[:4] == b"\x89PNG"
    # every row's command is derived from the call and reruns it: the same numbers come back
    rows = json.loads((run / "results.json").read_text())
    listops_line = (
        "kexue nystrom listops --steps 2 --batch_size 4 --train_size 16 --test_size 8 --min_len 8 "
        "--max_len 32 --dim 8 --depth 1 --num_landmarks 4 --conv_kernel 3"
    )
    assert {row["command"] for row in rows.values()} == {listops_line}
    main([*shlex.split(listops_line)[1:], "--out", str(tmp_path / "from-command")])
    assert json.loads((tmp_path / "from-command" / "summary.json").read_text()) == accs
    errors_line = f"kexue nystrom errors --run {run} --length 16 --num_sequences 2 --landmarks '[4, 8]'"
    assert {row["command"] for row in data.values()} == {errors_line}
    main([*shlex.split(errors_line)[1:], "--results", str(tmp_path / "again.json")])
    assert json.loads((tmp_path / "again.json").read_text()) == data


def test_attention_inputs_are_what_each_blocks_attention_sees():
    torch.manual_seed(0)
    model = NystromformerClassifier(
        len(lo.VOCAB), 10, 16, dim=8, depth=2, heads=2, num_landmarks=4, conv_kernel=3, dropout=0.0
    ).eval()
    tokens, _ = lo.to_tensors(*lo.generate(3, 8, 16, max_depth=3, seed=0), 16)
    mask = tokens != 0
    with torch.no_grad():
        x = model.embed(tokens) + model.pos.weight[:16]
        for i, block in enumerate(model.blocks):
            q, k, v = model.attention_inputs(tokens, block=i)
            assert q.shape == k.shape == v.shape == (3, 2, 16, 4)  # (B, H, n, d)
            attn = block.attn
            expected = attn.to_qkv(block.norm1(x)).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)
            torch.testing.assert_close(torch.stack([q, k, v]), expected, rtol=0, atol=0)
            x = block(x, mask)
    with pytest.raises(KexueError, match="blocks 0 to 1"):
        model.attention_inputs(tokens, block=2)
