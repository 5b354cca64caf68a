import json
import subprocess
import sys

import numpy as np
import pytest

from kexue.cli import main
from kexue.io import run_config

TINY = ["--settings.epochs", "1", "--settings.pretrain_epochs", "0", "--settings.gmm_init", "false", "--device", "cpu"]


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr()


def test_vae_cluster_train_eval_sample_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    main(["vae-cluster", "train", "--data", "digits", "--settings.epochs", "1", "--settings.pretrain_epochs", "1",
          "--settings.gmm_restarts", "1", "--settings.spectral_neighbors", "5", "--out", str(out)])
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
    assert evaluation["acc_hungarian"] == results["vae.digits.acc_hungarian"]["value"] and evaluation["data"] == "digits"
    assert {"init_acc_hungarian", "init_acc_majority"} <= set(json.loads((out / "model.json").read_text()))
    main(["vae-cluster", "sample", "--run", str(out), "--per_class", "3"])
    assert (out / "samples.png").stat().st_size > 1000 and (out / "clusters.png").stat().st_size > 1000


def test_user_errors_are_one_line(tmp_path, capsys):
    code, io = _run(["vae-cluster", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and io.err.strip().startswith("kexue: error: unknown data set") and len(io.err.strip().splitlines()) == 1
    code, io = _run(["vae-cluster", "eval", "--run", str(tmp_path)], capsys)
    assert code == 2 and "no trained model" in io.err
    code, io = _run(["reproduce", "--only", "nosuch", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "nosuch" in io.err and len(io.err.strip().splitlines()) == 1
    code, io = _run(["vae-cluster", "train", "--data", "digits", "--settings.backbone", "conv", "--settings.epochs", "1",
                     "--settings.pretrain_epochs", "0", "--out", str(tmp_path / "c")], capsys)
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
    """Fault 2 of issue 10: `eval --data OTHER` overwrote eval.json, which `study` then reported."""
    study = tmp_path / "study"
    main(["vae-cluster", "study", "--data", "digits", "--seeds", "0", *TINY, "--out", str(study)])
    seed = study / "seed-0"
    own = (seed / "eval.json").read_text()
    first = json.loads((study / "per_seed.json").read_text())
    other = _other_data(tmp_path / "other.npz")
    main(["vae-cluster", "eval", "--run", str(seed), "--data", str(other)])
    assert (seed / "eval.json").read_text() == own
    elsewhere = json.loads((seed / "eval-other.json").read_text())
    assert elsewhere["data"] == "other" and elsewhere["acc_hungarian"] != json.loads(own)["acc_hungarian"]
    main(["vae-cluster", "eval", "--run", str(seed), "--data", "digits"])  # the training data: eval.json again
    assert json.loads((seed / "eval.json").read_text()) == json.loads(own)
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
    main(["vae-cluster", "train", "--data", "digits", *TINY, "--settings.epochs", "2", "--resume", "--out", str(resumed)])
    assert "resume changes settings.epochs: 1 -> 2" in capsys.readouterr().err
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
    main([*args, "--seeds", "0,1,2", "--resume"])
    per_seed = json.loads((study / "per_seed.json").read_text())
    assert (study / "seed-0" / "model.safetensors").stat().st_mtime_ns == kept  # read back, not retrained
    assert {k: v[:2] for k, v in per_seed.items()} == first and len(per_seed["acc_hungarian"]) == 3
    # a seed of a study is a train run: its config.yaml reruns it alone
    main(["vae-cluster", "train", "--config", str(study / "seed-2" / "config.yaml"), "--out", str(tmp_path / "s2")])
    assert (tmp_path / "s2" / "model.safetensors").read_bytes() == (study / "seed-2" / "model.safetensors").read_bytes()


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "kexue", "--help"], capture_output=True, text=True, check=True).stdout
    assert "reproduce" in out and "vae-cluster" in out
