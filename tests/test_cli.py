import json
import subprocess
import sys

import pytest
import yaml

from kexue.cli import main


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
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["command"] == "vae-cluster-train" and config["settings"]["epochs"] == 1 and config["data"] == "digits"
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"vae.digits.acc_hungarian", "vae.digits.acc_majority"}
    assert 0.0 <= results["vae.digits.acc_hungarian"]["value"] <= results["vae.digits.acc_majority"]["value"]
    assert (out / "model.safetensors").is_file()
    assert (out / "vae" / "metrics.jsonl").is_file()
    main(["vae-cluster", "eval", "--run", str(out)])
    assert json.loads((out / "eval.json").read_text())["acc_hungarian"] == results["vae.digits.acc_hungarian"]["value"]
    main(["vae-cluster", "sample", "--run", str(out), "--per_class", "3"])
    assert (out / "samples.png").stat().st_size > 1000 and (out / "clusters.png").stat().st_size > 1000


def test_user_errors_are_one_line(tmp_path, capsys):
    code, io = _run(["vae-cluster", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and io.err.strip().startswith("kexue: error: unknown data set") and len(io.err.strip().splitlines()) == 1
    code, io = _run(["vae-cluster", "eval", "--run", str(tmp_path)], capsys)
    assert code == 2 and "no trained model" in io.err
    code, io = _run(["reproduce", "--only", "nosuch", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown section" in io.err
    code, io = _run(["vae-cluster", "train", "--data", "digits", "--settings.backbone", "conv", "--settings.epochs", "1",
                     "--settings.pretrain_epochs", "0", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "28×28" in io.err
    code, io = _run(["vae-cluster", "train", "--settings.kl", "exact", "--out", str(tmp_path / "k")], capsys)
    assert code == 2 and "kl must be" in io.err


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "kexue", "--help"], capture_output=True, text=True, check=True).stdout
    assert "reproduce" in out and "vae-cluster" in out
