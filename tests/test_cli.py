import importlib
import inspect
import json
import subprocess
import sys
import typing

import numpy as np
import pytest

from kexue.cli import EXTRAS, FLAGS, GROUPS, main
from kexue.io import run_config
from kexue.provenance import BARE_FLAGS

TINY = ["--settings.epochs", "1", "--settings.pretrain_epochs", "0", "--settings.gmm_init", "false", "--device", "cpu"]


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr()


def test_vae_cluster_train_eval_sample_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    main(
        [
            "vae-cluster",
            "train",
            "--data",
            "digits",
            "--settings.epochs",
            "1",
            "--settings.pretrain_epochs",
            "1",
            "--settings.gmm_restarts",
            "1",
            "--settings.spectral_neighbors",
            "5",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "Hungarian acc" in printed
    command, config = run_config(out)
    assert command == "vae-cluster-train" and config["settings"]["epochs"] == 1 and config["data"] == "digits"
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"vae.digits.acc_hungarian", "vae.digits.acc_majority"}
    assert 0.0 <= results["vae.digits.acc_hungarian"]["value"] <= results["vae.digits.acc_majority"]["value"]
    assert (out / "model.safetensors").is_file()
    assert (out / "vae" / "metrics.jsonl").is_file()
    main(["vae-cluster", "eval", "--run", str(out)])
    evaluation = json.loads((out / "eval.json").read_text())
    assert (
        evaluation["acc_hungarian"] == results["vae.digits.acc_hungarian"]["value"] and evaluation["data"] == "digits"
    )
    assert {"init_acc_hungarian", "init_acc_majority"} <= set(json.loads((out / "model.json").read_text()))
    main(["vae-cluster", "sample", "--run", str(out), "--per_class", "3"])
    assert (out / "samples.png").stat().st_size > 1000 and (out / "clusters.png").stat().st_size > 1000


def test_user_errors_are_one_line(tmp_path, capsys):
    code, io = _run(["vae-cluster", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], capsys)
    assert (
        code == 2
        and io.err.strip().startswith("kexue: error: unknown data set")
        and len(io.err.strip().splitlines()) == 1
    )
    code, io = _run(["vae-cluster", "eval", "--run", str(tmp_path)], capsys)
    assert code == 2 and "no trained model" in io.err
    code, io = _run(["reproduce", "--only", "nosuch", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "nosuch" in io.err and len(io.err.strip().splitlines()) == 1
    code, io = _run(
        [
            "vae-cluster",
            "train",
            "--data",
            "digits",
            "--settings.backbone",
            "conv",
            "--settings.epochs",
            "1",
            "--settings.pretrain_epochs",
            "0",
            "--out",
            str(tmp_path / "c"),
        ],
        capsys,
    )
    assert code == 2 and "28×28" in io.err
    code, io = _run(["vae-cluster", "train", "--settings.kl", "exact", "--out", str(tmp_path / "k")], capsys)
    assert code == 2 and "--settings.kl exact: choose one of 'sampled', 'closed'" in io.err


def _other_data(path):
    """8×8 images like digits but another data set: digits' test images, labels shifted."""
    from kexue.data.images import load_images

    d = load_images("digits")
    x, y = d.test_x[:, 0].numpy(), (d.test_y.numpy() + 3) % 10
    np.savez(path, x_train=x, y_train=y, x_test=x[:150], y_test=y[:150])
    return path


def test_eval_on_other_data_keeps_the_runs_own_scores(tmp_path, capsys):
    """`eval --data OTHER` used to overwrite eval.json, which `study` then reported."""
    study = tmp_path / "study"
    main(["vae-cluster", "study", "--data", "digits", "--seeds", "0", *TINY, "--out", str(study)])
    seed = study / "seed-0"
    own = (seed / "eval.json").read_text()
    first = json.loads((study / "per_seed.json").read_text())
    assert len(first["sample_self_consistency"]) == 1  # each seed's samples assigned back, label-free
    rows = json.loads((study / "results.json").read_text())
    assert rows["vae.digits.sample_self_consistency"]["value"] == first["sample_self_consistency"][0]
    # a seed finished before the check existed gets it when the study reads it back
    (seed / "eval.json").write_text(
        json.dumps({k: v for k, v in json.loads(own).items() if k != "sample_self_consistency"})
    )
    main(["vae-cluster", "study", "--data", "digits", "--seeds", "0", *TINY, "--resume", "--out", str(study)])
    assert (seed / "eval.json").read_text() == own
    other = _other_data(tmp_path / "other.npz")
    main(["vae-cluster", "eval", "--run", str(seed), "--data", str(other)])
    assert (seed / "eval.json").read_text() == own
    elsewhere = json.loads((seed / "eval-other.json").read_text())
    assert elsewhere["data"] == "other" and elsewhere["acc_hungarian"] != json.loads(own)["acc_hungarian"]
    main(["vae-cluster", "eval", "--run", str(seed), "--data", "digits"])  # the training data: eval.json again
    again = json.loads((seed / "eval.json").read_text())
    assert 0 <= again["sample_self_consistency"] <= 1 and again == json.loads(own)  # study and eval: the sample check
    # An eval.json an older kexue overwrote with other data's scores is not believed: the seed is re-evaluated.
    (seed / "eval.json").write_text(json.dumps({k: v for k, v in elsewhere.items() if k != "data"}))
    capsys.readouterr()
    main(["vae-cluster", "study", "--data", "digits", "--seeds", "0", *TINY, "--resume", "--out", str(study)])
    assert json.loads((study / "per_seed.json").read_text()) == first
    assert json.loads((seed / "eval.json").read_text()) == json.loads(own)


def test_a_runs_config_yaml_reruns_it(tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    main(["vae-cluster", "train", "--data", "digits", *TINY, "--settings.latent_dim", "4", "--out", str(first)])
    main(["vae-cluster", "train", "--config", str(first / "config.yaml"), "--out", str(again)])
    assert run_config(again) == run_config(first)
    assert json.loads((again / "model.json").read_text()) == json.loads((first / "model.json").read_text())
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_resume_continues_and_needs_a_checkpoint(tmp_path, capsys):
    short, resumed, straight = tmp_path / "short", tmp_path / "resumed", tmp_path / "straight"
    main(["vae-cluster", "train", "--data", "digits", *TINY, "--out", str(short)])
    code, io = _run(["vae-cluster", "train", "--data", "digits", *TINY, "--out", str(short)], capsys)
    assert code == 2 and "--resume" in io.err  # a non-empty --out needs --resume or --overwrite
    (resumed / "vae").mkdir(parents=True)
    (resumed / "config.yaml").write_text((short / "config.yaml").read_text())
    code, io = _run(["vae-cluster", "train", "--data", "digits", *TINY, "--resume", "--out", str(resumed)], capsys)
    assert code == 2 and "no checkpoint to resume from" in io.err
    import shutil

    shutil.rmtree(resumed)
    shutil.copytree(short, resumed)
    main(
        ["vae-cluster", "train", "--data", "digits", *TINY, "--settings.epochs", "2", "--resume", "--out", str(resumed)]
    )
    assert "resume changes settings.epochs: 1 -> 2" in capsys.readouterr().out
    main(["vae-cluster", "train", "--data", "digits", *TINY, "--settings.epochs", "2", "--out", str(straight)])
    assert (resumed / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert run_config(resumed)[1]["settings"]["epochs"] == 2


def test_study_resume_reads_back_resumes_and_starts(tmp_path, capsys):
    study = tmp_path / "study"
    args = ["vae-cluster", "study", "--data", "digits", *TINY, "--out", str(study)]
    main([*args, "--seeds", "0,1"])
    first = json.loads((study / "per_seed.json").read_text())
    code, io = _run([*args, "--seeds", "0,1"], capsys)
    assert code == 2 and "--resume" in io.err  # rerunning a study folder needs --resume
    kept = (study / "seed-0" / "model.safetensors").stat().st_mtime_ns
    for name in ("model.json", "model.safetensors", "eval.json"):  # seed 1 stopped after its last checkpoint
        (study / "seed-1" / name).unlink()
    meta = json.loads((study / "seed-0" / "model.json").read_text())  # a seed made before `init` existed
    del meta["config"]["init"]
    (study / "seed-0" / "model.json").write_text(json.dumps(meta))
    main([*args, "--seeds", "0,1,2", "--resume"])
    per_seed = json.loads((study / "per_seed.json").read_text())
    assert (study / "seed-0" / "model.safetensors").stat().st_mtime_ns == kept  # read back, not retrained
    assert {k: v[:2] for k, v in per_seed.items()} == first and len(per_seed["acc_hungarian"]) == 3
    # the study's rows carry the command that reruns the whole study: its seeds and settings
    rows = json.loads((study / "results.json").read_text())
    line = (
        "kexue vae-cluster study --data digits --seeds 0,1,2 --settings.epochs 1 --settings.pretrain_epochs 0 "
        "--settings.gmm_init false --device cpu"
    )
    assert {row["command"] for row in rows.values()} == {line}
    # a seed of a study is a train run: its config.yaml reruns it alone
    main(["vae-cluster", "train", "--config", str(study / "seed-2" / "config.yaml"), "--out", str(tmp_path / "s2")])
    assert (tmp_path / "s2" / "model.safetensors").read_bytes() == (study / "seed-2" / "model.safetensors").read_bytes()


def test_study_jobs_trains_seeds_in_processes_with_the_results_of_one_at_a_time(tmp_path, capsys):
    """--jobs 2: two seeds at once, each in a process of its own with its share of the threads; every seed's
    weights and scores are those of the same study run one seed at a time on that many threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the workers get 2 // 2 = 1 thread each, as the serial run below
    try:
        args = ["vae-cluster", "study", "--data", "digits", "--seeds", "0,1", *TINY]
        main([*args, "--jobs", "2", "--out", str(tmp_path / "jobs")])
        assert "seeds 0, 1: 2 at a time, 1 torch thread(s) each" in capsys.readouterr().out
        torch.set_num_threads(1)
        main([*args, "--out", str(tmp_path / "serial")])
    finally:
        torch.set_num_threads(threads)
    for seed in ("seed-0", "seed-1"):
        weights = [(tmp_path / run / seed / "model.safetensors").read_bytes() for run in ("jobs", "serial")]
        assert weights[0] == weights[1]
    per_seed = [json.loads((tmp_path / run / "per_seed.json").read_text()) for run in ("jobs", "serial")]
    assert per_seed[0] == per_seed[1] and len(per_seed[0]["acc_hungarian"]) == 2
    rows = json.loads((tmp_path / "jobs" / "results.json").read_text())
    assert all(row["command"].endswith("--device cpu --jobs 2") for row in rows.values())
    code, io = _run([*args, "--jobs", "0", "--out", str(tmp_path / "zero")], capsys)
    assert code == 2 and "jobs" in io.err and not (tmp_path / "zero").exists()


def test_a_seed_failing_in_a_worker_is_one_error_line_and_leaves_no_half_made_seed(tmp_path, capsys):
    study = tmp_path / "study"
    args = ["vae-cluster", "study", "--data", "digits", *TINY, "--out", str(study)]
    main([*args, "--seeds", "0"])
    (study / "seed-1").write_text("not a folder")  # seed 1's worker cannot make its run folder
    code, io = _run([*args, "--seeds", "0,1,2,3", "--jobs", "2", "--resume"], capsys)
    assert code == 2 and io.err.count("kexue: error:") == 1 and "seed-1" in io.err and "Traceback" not in io.err
    from kexue.recipes.vae_cluster import has_checkpoint

    for seed in ("seed-2", "seed-3"):  # finished, resumable, or removed when stopped before a checkpoint
        run = study / seed
        assert not run.exists() or (run / "model.safetensors").is_file() or has_checkpoint(run)
    assert (study / "seed-0" / "model.safetensors").is_file()


def test_an_old_runs_config_reruns_it_with_the_settings_added_since_at_their_old_defaults(tmp_path):
    """--config RUN/config.yaml of a run made before --settings.anchor existed runs anchor 0 (its default
    then), not today's 10: the config reruns what that run ran."""
    run = tmp_path / "old"
    main(["vae-cluster", "train", "--data", "digits", *TINY, "--out", str(run)])
    text = (run / "config.yaml").read_text()
    assert "anchor: 10.0" in text  # today's default
    (run / "config.yaml").write_text("".join(line for line in text.splitlines(True) if "anchor" not in line))
    main(["vae-cluster", "train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "again")])
    assert json.loads((tmp_path / "again" / "model.json").read_text())["config"]["anchor"] == 0.0


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "kexue", "--help"], capture_output=True, text=True, check=True).stdout
    assert "reproduce" in out and "vae-cluster" in out


def _recording(monkeypatch, module, name, calls, call_through=True):
    """Replace the command ``module.name`` (the CLI looks it up there) by one that records its arguments."""
    import functools

    real = getattr(module, name)

    @functools.wraps(real)  # same signature: the parser is built from it
    def recorded(**kwargs):
        calls.append(kwargs)
        return real(**kwargs) if call_through else None

    monkeypatch.setattr(module, name, recorded)


def test_a_results_rows_command_parses_back_to_the_same_arguments(tmp_path, monkeypatch, capsys):
    """The `command` of a results row, fed back through the CLI parser, gives the arguments of the run."""
    import shlex

    import kexue.commands.vae_cluster as commands
    from kexue.cli import run

    calls: list[dict] = []
    _recording(monkeypatch, commands, "train", calls)
    out = tmp_path / "run"
    run(
        [
            "vae-cluster",
            "train",
            "--data",
            "digits",
            *TINY,
            "--settings.lr",
            "0.003",
            "--settings.kl",
            "closed",
            "--settings.augment",
            "false",
            "--settings.latent_dim",
            "3",
            "--out",
            str(out),
        ]
    )
    lines = {row["command"] for row in json.loads((out / "results.json").read_text()).values()}
    assert len(lines) == 1
    line = lines.pop()
    assert line.startswith("kexue vae-cluster train --data digits ") and "--out" not in line
    _recording(monkeypatch, commands, "train", calls, call_through=False)
    run(shlex.split(line)[1:])
    ran, parsed = calls
    assert str(ran.pop("out")) == str(out) and parsed.pop("out") is None  # where it wrote is not in the command
    assert parsed == ran and parsed["settings"].lr == 0.003 and parsed["settings"].augment is False


def _imports(path):
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_layers_import_only_downwards():
    """commands/ never imports bench/; reproduce/ never imports commands/; recipes/ import neither (source check)."""
    from pathlib import Path

    import kexue

    root = Path(kexue.__file__).parent
    rules = {
        "commands": ("kexue.bench", "kexue.reproduce"),
        "reproduce": ("kexue.commands",),
        "recipes": ("kexue.bench", "kexue.commands", "kexue.reproduce"),
    }
    broken = []
    for folder, banned in rules.items():
        for path in sorted((root / folder).glob("*.py")):
            broken += [
                f"{folder}/{path.name} imports {name}"
                for name in sorted(_imports(path))
                if any(name == b or name.startswith(b + ".") for b in banned)
            ]
    assert not broken, broken


def test_recipes_take_the_commands_parameters():
    """A recipe computes its results rows' command from its own signature: it must be the command's."""
    import inspect

    from kexue.commands import nystrom, vae_cluster
    from kexue.recipes import listops
    from kexue.recipes import vae_cluster as vae_recipe

    pairs = [
        (vae_cluster.train, vae_recipe.train_run),
        (vae_cluster.study, vae_recipe.run_study),
        (nystrom.listops, listops.listops_study),
        (nystrom.errors, listops.trained_model_errors),
    ]
    for command, recipe in pairs:
        ours = [(p.name, p.default) for p in inspect.signature(command).parameters.values()]
        theirs = [(p.name, p.default) for p in inspect.signature(recipe).parameters.values()]
        assert ours == theirs, (command.__name__, recipe.__name__)


def test_su2018_preset_runs_from_the_cli_and_its_config_reruns_it(tmp_path, capsys):
    from kexue.io import run_config

    run = tmp_path / "su"
    main(["vae-cluster", "train", "--data", "digits", "--preset", "su2018", "--settings.epochs", "1",
          "--settings.batch_size", "200", "--device", "cpu", "--out", str(run)])  # fmt: skip
    command, config = run_config(run)
    used = json.loads((run / "model.json").read_text())["config"]
    assert config["preset"] == "su2018" and config["settings"] == used  # config.yaml holds what was used
    assert used["pretrain_epochs"] == 0 and used["kl"] == "closed" and used["recon_weight"] == 5.0
    assert used["balance"] is True and used["gmm_init"] is False and used["batch_size"] == 200
    rows = json.loads((run / "results.json").read_text())
    assert set(rows) == {f"vae.su2018.digits.{m}" for m in ("acc_hungarian", "acc_majority", "nmi", "ari")}
    assert "--preset su2018" in rows["vae.su2018.digits.acc_hungarian"]["command"]
    again = tmp_path / "again"
    main(["vae-cluster", "train", "--config", str(run / "config.yaml"), "--out", str(again)])
    assert json.loads((again / "model.json").read_text())["config"] == used


def test_a_flag_at_our_default_value_still_goes_on_top_of_the_preset(tmp_path, monkeypatch):
    """--preset su2018 --settings.kl sampled --settings.augment true: both are our defaults, and both
    must win over the author's closed-form KL and no augmentation (the flags come after the preset's)."""
    from kexue.cli import _with_preset
    from kexue.recipes import vae_cluster as recipe

    seen = {}
    monkeypatch.setattr(recipe, "train_cluster_vae", lambda images, cfg, *a, **k: seen.setdefault("cfg", cfg) and 1 / 0)
    args = ["vae-cluster", "train", "--data", "digits", "--preset", "su2018", "--settings.kl", "sampled",
            "--settings.augment", "true", "--settings.epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "r")]  # fmt: skip
    inserted = _with_preset("vae-cluster", args)
    at = inserted.index("--settings.kl")
    assert inserted[at + 1] == "closed" and at < inserted.index("--preset")  # the preset's flags come first
    with pytest.raises(SystemExit):
        main(args)
    cfg = seen["cfg"]
    assert cfg.kl == "sampled" and cfg.augment is True and cfg.epochs == 1
    assert cfg.pretrain_epochs == 0 and cfg.gmm_init is False and cfg.recon_weight == 5.0  # the rest: the author's
    assert _with_preset("lm", ["lm", "train", "--preset", "x"]) == ["lm", "train", "--preset", "x"]


def test_every_boolean_option_may_be_given_bare():
    """A command's top-level ``bool`` argument is a flag (``--offline``) as well as ``--offline true``: FLAGS
    lists exactly those (``--settings.*`` fields take a value), and a rerun command writes a true one bare."""
    found = set()
    for _, commands in GROUPS.values():
        for target in commands.values():
            module, name = target.split(":")
            try:
                function = getattr(importlib.import_module(module), name)
            except ModuleNotFoundError as e:  # an optional extra not installed here
                assert e.name.split(".")[0] in EXTRAS, e
                continue
            hints = typing.get_type_hints(function)
            for p in inspect.signature(function).parameters:
                if hints.get(p) in (bool, bool | None):
                    found.add(f"--{p}")
    assert found == FLAGS, (sorted(found - FLAGS), sorted(FLAGS - found))
    assert {flag[2:] for flag in FLAGS} == BARE_FLAGS
