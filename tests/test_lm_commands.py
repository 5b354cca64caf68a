"""`kexue lm train / generate / termination` end to end on a tiny corpus folder."""

import inspect
import json
import re
import shlex
import shutil
from typing import get_args

import pytest
import torch

from kexue.cli import main
from kexue.commands import lm
from kexue.errors import KexueError
from kexue.recipes import lm as recipe
from kexue.recipes.lm import LMTrainSettings

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
        settings = LMTrainSettings(
            head=head, eps=0.1, dim=16, layers=1, dropout=0.0, steps=30, batch_size=4, bptt=8, lr=1e-2, eval_every=0
        )
        runs[head] = lm.train(corpus=str(corpus), settings=settings, out=tmp_path / head)
        assert (runs[head] / "model.safetensors").is_file()
    texts = lm.generate(runs["st"], prompt="the cat", decoder="greedy", max_new_tokens=30)
    assert len(texts) == 1
    res = tmp_path / "termination.json"
    flat = lm.termination(
        models=f"vanilla={runs['softmax']},st={runs['st']}",
        prefixes=5,
        cap=20,
        corpus=str(corpus),
        results=res,
        out=tmp_path / "term",
    )
    # eps = 0.1: p(eos) >= 1 - 0.9^(t+1), so every decoder of the self-terminating model stops within 20
    for dec in lm.DECODERS:
        assert flat[f"termination.st.{dec}.nonterminating"] == 0.0, dec
        assert 0.0 <= flat[f"termination.vanilla.{dec}.nonterminating"] <= 1.0
    assert flat["termination.st.greedy.mean_length"] <= 7
    data = json.loads(res.read_text())
    assert data["termination.vanilla.ppl"]["value"] == pytest.approx(flat["termination.vanilla.ppl"])
    # test_ppl: the figure each training run reported (same corpus), which the study's own measure agrees with
    for name, head in (("vanilla", "softmax"), ("st", "st")):
        trained = json.loads((runs[head] / "results.json").read_text())[f"lm.lstm_{head}.test_ppl"]["value"]
        assert data[f"termination.{name}.test_ppl"]["value"] == trained
        assert flat[f"termination.{name}.ppl"] == pytest.approx(trained, rel=1e-4)
    assert "termination: 2 models x 10 decoders" in capsys.readouterr().out


def test_test_ppl_is_measured_when_the_study_reads_another_corpus(corpus, tmp_path, capsys):
    run = tmp_path / "va"
    settings = LMTrainSettings(dim=8, layers=1, dropout=0.0, steps=3, batch_size=4, bptt=8, eval_every=0)
    lm.train(corpus=str(corpus), settings=settings, out=run)
    other = tmp_path / "other"
    shutil.copytree(corpus, other)
    (other / "test.txt").write_text((corpus / "test.txt").read_text().replace("cat", "dog"))
    flat = lm.termination(
        models=f"a={run}", decoders="greedy", prefixes=2, cap=3, corpus=str(other), out=tmp_path / "t"
    )
    trained = json.loads((run / "results.json").read_text())["lm.lstm_softmax.test_ppl"]["value"]
    assert flat["termination.a.test_ppl"] == flat["termination.a.ppl"] != pytest.approx(trained)


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["lm", "generate", "--run", str(tmp_path), "--prompt", "a b"])
    assert e.value.code == 2
    assert "kexue: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lm", "termination", "--models", "nonsense", "--out", str(tmp_path / "t")])


def test_the_decoder_choices_of_the_cli_are_the_study_decoders():
    assert get_args(recipe.DecoderName) == tuple(recipe.DECODERS)


@pytest.mark.parametrize(
    "command,procedure",
    [(lm.train, recipe.train_lm), (lm.generate, recipe.generate), (lm.termination, recipe.termination_study)],
)
def test_each_command_takes_the_arguments_of_its_recipe(command, procedure):
    """The CLI parses the command's signature and a results row's command comes from the recipe's: they agree."""

    def params(fn):
        return [(p.name, p.default, p.annotation) for p in inspect.signature(fn).parameters.values()]

    assert params(command) == params(procedure)


def test_termination_rows_report_repetition_of_each_decoder():
    from kexue.generation import DecodeOutput
    from kexue.recipes.lm import termination_rows

    eos = 3
    tokens = torch.tensor([[5, 6, 5, 6, 5, 6, 5, 6], [7, 8, 9, eos, 0, 0, 0, 0]])
    out = DecodeOutput(
        tokens,
        torch.zeros(2, 8),
        torch.tensor([8, 4]),
        torch.tensor([False, True]),
        ["max_length", "eos"],
        torch.zeros(2),
    )
    row = termination_rows(out, eos)
    assert row["nonterminating"] == 0.5 and row["mean_length"] == 6.0
    assert row["loop_fraction"] == 0.5  # the (5 6)* row loops, the other does not
    assert 0 < row["rep_w"] < 1 and row["seq_rep_4"] > 0


# ---- run folders: reuse, overwrite, resume -------------------------------------------------------


def _tiny(corpus, out, *extra):
    return [
        "lm",
        "train",
        "--corpus",
        str(corpus),
        "--threads",
        "1",
        "--out",
        str(out),
        "--settings.dim",
        "16",
        "--settings.layers",
        "1",
        "--settings.batch_size",
        "4",
        "--settings.bptt",
        "5",
        "--settings.eval_every",
        "3",
        "--settings.eval_tokens",
        "200",
        *extra,
    ]


def _kexue(args, capsys):
    capsys.readouterr()
    main([str(a) for a in args])
    return capsys.readouterr()


def _records(out, split):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["split"] == split]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_reuse_overwrite_then_resume_continues_from_the_new_checkpoint(corpus, tmp_path, capsys, cli_error):
    out = tmp_path / "prune"
    _kexue(_tiny(corpus, out, "--settings.steps", "30"), capsys)
    # a non-empty run folder is refused without --overwrite / --resume, and left as it was
    cli_error(_tiny(corpus, out, "--settings.steps", "10"), out=out, match="--overwrite")
    _kexue(_tiny(corpus, out, "--settings.steps", "10", "--overwrite"), capsys)
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000009", "step-000010"]
    io = _kexue(_tiny(corpus, out, "--settings.steps", "15", "--resume"), capsys)
    assert "resume changes settings.steps: 10 -> 15" in io.out
    assert "lm lstm/softmax: 15 steps" in io.out
    # continued from step 10: the evaluations of the first 10 steps are not repeated
    assert _records(out, "eval") == [3, 6, 9, 10, 12, 15]
    assert _records(out, "train") == [10, 15]
    # `latest` naming a missing checkpoint: the newest complete one is used, with a warning
    (out / "checkpoints" / "latest").write_text("step-000999\n")
    io = _kexue(_tiny(corpus, out, "--settings.steps", "18", "--resume"), capsys)
    assert "step-000999, which is missing" in io.err and "using step-000015" in io.err
    assert _records(out, "eval") == [3, 6, 9, 10, 12, 15, 18]
    # nothing valid to resume from: an error, never a silent fresh start
    for ckpt in (out / "checkpoints").glob("step-*"):
        shutil.rmtree(ckpt)
    before = (out / "metrics.jsonl").read_text()
    cli_error(_tiny(corpus, out, "--settings.steps", "21", "--resume"), match="no checkpoint to resume from")
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_after_a_kill_repeats_nothing_and_matches_the_straight_run(corpus, tmp_path, capsys):
    out = tmp_path / "killed"
    _kexue(_tiny(corpus, out, "--settings.steps", "15"), capsys)
    straight = _weights(out / "model.safetensors")
    # as if killed between the evaluation at step 15 and its checkpoint: metrics.jsonl runs ahead
    shutil.rmtree(out / "checkpoints" / "step-000015")
    (out / "checkpoints" / "latest").write_text("step-000012\n")
    (out / "model.safetensors").unlink()
    _kexue(_tiny(corpus, out, "--settings.steps", "15", "--resume"), capsys)
    assert _records(out, "eval") == [3, 6, 9, 12, 15]
    assert _records(out, "train") == [15]
    resumed = _weights(out / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resume_of_a_finished_run_reports_its_train_loss(corpus, tmp_path, capsys):
    out = tmp_path / "done"
    first = _kexue(_tiny(corpus, out, "--settings.steps", "6"), capsys).out
    again = _kexue(_tiny(corpus, out, "--settings.steps", "6", "--resume"), capsys).out
    loss = re.search(r"train loss ([0-9.]+)", first).group(1)
    assert f"train loss {loss}" in again and "nan" not in again
    assert _records(out, "eval") == [3, 6]


def test_resume_refuses_a_model_change_and_names_an_allowed_one(corpus, tmp_path, capsys, cli_error):
    out = tmp_path / "changed"
    _kexue(_tiny(corpus, out, "--settings.steps", "6"), capsys)
    config = (out / "config.yaml").read_bytes()
    line = cli_error(
        _tiny(corpus, out, "--settings.steps", "6", "--resume", "--settings.dim", "32"),
        out=out,
        match="settings.dim 16 -> 32",
    )
    assert "resume" in line and (out / "config.yaml").read_bytes() == config
    io = _kexue(_tiny(corpus, out, "--settings.steps", "9", "--resume", "--settings.lr", "0.01"), capsys)
    assert "resume changes settings.lr: 0.002 -> 0.01" in io.out
    assert "lr: 0.01" in (out / "config.yaml").read_text()


def _diverges(args, capsys):
    """Run a command that must stop with "training diverged": exit 2, one error line after the progress bar."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if "kexue: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("kexue: error: training diverged"), err
    return errors[0]


@pytest.mark.parametrize("lr", ["1e6", "1e3"])  # 1e3 diverges after a first checkpoint
def test_a_diverging_run_ends_in_one_line_and_keeps_only_finite_checkpoints(corpus, tmp_path, capsys, lr):
    out = tmp_path / "diverged"
    _diverges(_tiny(corpus, out, "--settings.steps", "60", "--settings.lr", lr), capsys)
    assert not (out / "results.json").exists()
    for ckpt in (out / "checkpoints").glob("step-*") if out.exists() else []:
        assert all(torch.isfinite(t).all() for t in _weights(ckpt / "model.safetensors").values())


def test_a_runs_config_fed_back_reproduces_it(corpus, tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    _kexue(_tiny(corpus, first, "--settings.steps", "6"), capsys)
    _kexue(["lm", "train", "--config", first / "config.yaml", "--out", again], capsys)
    assert (again / "config.yaml").read_text() == (first / "config.yaml").read_text()
    a, b = _weights(first / "model.safetensors"), _weights(again / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    term = [
        "lm",
        "termination",
        "--models",
        f"a={first}",
        "--decoders",
        "greedy",
        "--prefixes",
        "3",
        "--cap",
        "5",
        "--corpus",
        corpus,
    ]
    _kexue(term + ["--out", tmp_path / "t1"], capsys)
    _kexue(["lm", "termination", "--config", tmp_path / "t1" / "config.yaml", "--out", tmp_path / "t2"], capsys)
    assert (tmp_path / "t1" / "results.json").read_text() == (tmp_path / "t2" / "results.json").read_text()


def _rerun(command, out, capsys):
    """A results row's command, fed back to the CLI (in-process) with an output folder."""
    args = shlex.split(command)
    assert args[0] == "kexue"
    return _kexue([*args[1:], "--out", out], capsys)


def test_a_results_rows_command_fed_back_reproduces_the_run(corpus, tmp_path, capsys):
    first = tmp_path / "first"
    _kexue(_tiny(corpus, first, "--settings.steps", "6", "--settings.head", "st", "--settings.eps", "0.1"), capsys)
    row = json.loads((first / "results.json").read_text())["lm.lstm_st.test_ppl"]
    assert row["command"].startswith("kexue lm train --corpus ")
    assert "--settings.head st" in row["command"] and "--out" not in row["command"]
    _rerun(row["command"], tmp_path / "again", capsys)
    again = json.loads((tmp_path / "again" / "results.json").read_text())["lm.lstm_st.test_ppl"]
    assert again == row  # the same value, and the same command
    a, b = _weights(first / "model.safetensors"), _weights(tmp_path / "again" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the termination study's rows too
    _kexue(
        [
            "lm",
            "termination",
            "--models",
            f"a={first}",
            "--decoders",
            "greedy,ancestral",
            "--prefixes",
            "3",
            "--cap",
            "5",
            "--corpus",
            corpus,
            "--out",
            tmp_path / "t1",
        ],
        capsys,
    )
    rows = json.loads((tmp_path / "t1" / "results.json").read_text())
    commands = {r["command"] for r in rows.values()}
    assert len(commands) == 1
    _rerun(commands.pop(), tmp_path / "t2", capsys)
    assert json.loads((tmp_path / "t2" / "results.json").read_text()) == rows


def test_results_merges_the_figure_into_a_results_file(corpus, tmp_path, capsys):
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps({"other.figure": {"value": 1.0, "published": None, "source": None, "command": "x"}}))
    _kexue(_tiny(corpus, tmp_path / "run", "--settings.steps", "3", "--results", merged), capsys)
    data = json.loads(merged.read_text())
    assert set(data) == {"other.figure", "lm.lstm_softmax.test_ppl"}
    assert "--results" not in data["lm.lstm_softmax.test_ppl"]["command"]


def test_reproduce_and_commands_of_articles_2_and_5_reach_the_library_only_through_recipes():
    """reproduce/ never imports commands/ (so everything it reports a user can rerun from the recipes), and
    commands/ stay thin: no bench/, no model file, no training loop of their own."""
    import ast
    from pathlib import Path

    import kexue

    root = Path(kexue.__file__).parent

    def imports(relative):
        tree = ast.parse((root / relative).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }

    for section in ("reproduce/decoding.py", "reproduce/onlstm.py"):
        assert not [m for m in imports(section) if m.startswith("kexue.commands")], section
    for command in ("commands/lm.py", "commands/onlstm.py"):
        assert {m for m in imports(command) if m.startswith("kexue.")} <= {
            "kexue.params",
            "kexue.recipes",
            "kexue.recipes.lm",
            "kexue.recipes.onlstm",
        }


def test_a_resumed_study_reads_back_what_it_measured_and_decodes_the_rest(corpus, tmp_path, monkeypatch):
    run = tmp_path / "va"
    settings = LMTrainSettings(dim=8, layers=1, dropout=0.0, steps=3, batch_size=4, bptt=8, eval_every=0)
    lm.train(corpus=str(corpus), settings=settings, out=run)
    kw = dict(models=f"a={run}", decoders="greedy,ancestral,topk", prefixes=4, cap=6, corpus=str(corpus))
    straight = lm.termination(**kw, out=tmp_path / "straight")
    decoded = []
    real = recipe.decode_in_chunks

    def counting(model, prompts, dec, *args):
        decoded.append(dec)
        if dec == "topk" and len(decoded) == 3:  # the first run dies at its third decoder
            raise KeyboardInterrupt
        return real(model, prompts, dec, *args)

    monkeypatch.setattr(recipe, "decode_in_chunks", counting)
    with pytest.raises(KeyboardInterrupt):
        lm.termination(**kw, out=tmp_path / "t")
    landed = json.loads((tmp_path / "t" / "results.json").read_text())
    assert "termination.a.ancestral.nonterminating" in landed and "termination.a.topk.nonterminating" not in landed
    decoded.clear()
    resumed = lm.termination(**kw, out=tmp_path / "t", resume=True)
    assert decoded == ["topk"]  # greedy and ancestral read back
    assert resumed == straight  # seeded per decoder: the same figures as one straight run
    assert (
        "--resume"
        not in json.loads((tmp_path / "t" / "results.json").read_text())["termination.a.topk.mean_length"]["command"]
    )
    with pytest.raises(KexueError, match="prefixes 4 -> 3"):
        lm.termination(**{**kw, "prefixes": 3}, out=tmp_path / "t", resume=True)
