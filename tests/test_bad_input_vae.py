"""Bad input to `kexue vae-cluster train / eval / sample / study`: always one line, exit 2, nothing written.

The table starts from the bad inputs first found by hand (the rows under that comment) and adds every
constrained parameter, bad --config files, bad data files, bad run folders and bad output paths.
One tiny trained run (digits, one epoch) is built once for the module.
"""

import gzip
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("error")  # a warning would be a second line on stderr

TINY = ["--settings.epochs", "1", "--settings.pretrain_epochs", "0", "--settings.gmm_init", "false", "--device", "cpu"]


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _idx_dir(folder: Path, train=(8, 8), test=(8, 8), n=20, labels=None) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, size in (("train", train), ("t10k", test)):
        (folder / f"{split}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, *size))))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(_idx(np.arange(labels or n) % 3))
    return folder


def _npz(path: Path, n=20, size=(8, 8), test_size=None, y=None, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((n, *size)),
        "y_train": np.arange(n) % 3 if y is None else y,
        "x_test": rng.random((n, *(test_size or size))),
        "y_test": np.arange(n) % 3,
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad data files, bad configs and bad run folders, made once; name -> path."""
    from kexue.commands.vae_cluster import VAEClusterConfig, train

    d = tmp_path_factory.mktemp("vae-bad")
    f: dict[str, Path] = {}
    # data
    f["idx_zlib"] = _idx_dir(d / "idx_zlib")
    raw = gzip.compress(_idx(np.random.default_rng(1).integers(0, 256, (20, 8, 8))))
    broken = raw[:12] + bytes(b ^ 0x5A for b in raw[12:60]) + raw[60:]
    (f["idx_zlib"] / "train-images-idx3-ubyte").unlink()
    (f["idx_zlib"] / "train-images-idx3-ubyte.gz").write_bytes(broken)
    f["idx_truncated"] = _idx_dir(d / "idx_truncated")
    path = f["idx_truncated"] / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    f["idx_counts"] = _idx_dir(d / "idx_counts", labels=19)
    f["idx_sizes"] = _idx_dir(d / "idx_sizes", test=(6, 6))
    f["idx_missing"] = _idx_dir(d / "idx_missing")
    (f["idx_missing"] / "t10k-labels-idx1-ubyte").unlink()
    (d / "empty.npz").write_bytes(b"")
    f["empty_npz"] = d / "empty.npz"
    f["zero_images"] = _npz(d / "zero_images.npz", n=0)
    f["labels_minus1"] = _npz(d / "labels_minus1.npz", y=np.full(20, -1))
    f["neg_labels"] = _npz(d / "neg_labels.npz", y=np.arange(20) % 3 - 1)
    f["frac_labels"] = _npz(d / "frac_labels.npz", y=np.full(20, 0.5))
    f["labels_2d"] = _npz(d / "labels_2d.npz", y=np.zeros((20, 2), dtype=int))
    f["missing_keys"] = _npz(d / "missing_keys.npz", x_test=None, y_test=None)
    f["count_mismatch"] = _npz(d / "count_mismatch.npz", y=np.arange(19) % 3)
    f["size_mismatch"] = _npz(d / "size_mismatch.npz", test_size=(7, 7))
    f["nan_images"] = _npz(d / "nan_images.npz", x_train=np.full((20, 8, 8), np.nan))
    f["string_images"] = _npz(d / "string_images.npz", x_train=np.full((20, 8, 8), "a"))
    f["object_arrays"] = _npz(d / "object_arrays.npz", x_train=np.array([None] * 20, dtype=object))
    (d / "random.npz").write_bytes(np.random.default_rng(0).bytes(300))
    f["random_npz"] = d / "random.npz"
    np.save(d / "single.npy", np.zeros((20, 8, 8)))
    f["single_array"] = (d / "single.npy").rename(d / "single.npz")
    f["folder_npz"] = d / "folder.npz"
    f["folder_npz"].mkdir()
    f["text"] = d / "data.txt"
    f["text"].write_text("not images\n")
    f["big_images"] = _npz(d / "big_images.npz", size=(28, 28))
    # configs
    for name, body in {
        "cfg_empty": b"",
        "cfg_latin1": "epochs: caf\u00e9\n".encode("latin-1"),
        "cfg_list": b"- 1\n- 2\n",
        "cfg_malformed": b"settings:\n  epochs: [1\n",
        "cfg_python": b"settings: !!python/object/apply:os.system ['echo hi']\n",
        "cfg_unknown_top": b"bogus: 1\n",
        "cfg_unknown_nested": b"settings:\n  epoch: 3\n",
        "cfg_badtype": b"settings:\n  epochs: many\n",
        "cfg_zero": b"settings:\n  epochs: 0\n",
        "cfg_data_null": b"data: null\n",
    }.items():
        f[name] = d / f"{name}.yaml"
        f[name].write_bytes(body)
    f["cfg_dir"] = d / "cfg_dir"
    f["cfg_dir"].mkdir()
    f["missing"] = d / "nope"
    f["file"] = d / "regular_file"
    f["file"].write_text("x\n")
    # one trained run and broken copies of it
    run = d / "run"
    train(data="digits", out=run, settings=VAEClusterConfig(epochs=1, pretrain_epochs=0, gmm_init=False), device="cpu")
    f["run"] = run

    def variant(name, model_json=None, drop=()):
        folder = d / name
        shutil.copytree(run, folder)
        for rel in drop:
            (folder / rel).unlink() if (folder / rel).is_file() else shutil.rmtree(folder / rel)
        if model_json is not None:
            (folder / "model.json").write_text(model_json)
        f[name] = folder

    good = (run / "model.json").read_text()
    variant("run_copy")
    variant("run_no_model", drop=("model.json", "model.safetensors", "vae", "eval.json", "results.json"))
    variant("run_bad_json", "{bad")
    variant("run_json_list", "[1, 2]")
    variant("run_no_config_key", good.replace('"config"', '"konfig"'))
    variant("run_extra_key", good.replace('"backbone": "auto"', '"backbone": "auto", "bogus": 1'))
    variant("run_bad_value", good.replace('"latent_dim": 20', '"latent_dim": 0'))
    variant("run_no_weights", drop=("model.safetensors",))
    variant("run_bad_weights")
    (f["run_bad_weights"] / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    for name, command in (("run_lm", "lm-train"), ("run_study", "vae-cluster-study")):
        f[name] = d / name
        f[name].mkdir()
        (f[name] / "config.yaml").write_text(f"# kexue run config: {command}\nsteps: 3\n")
    f["not_a_run"] = d / "not_a_run"
    f["not_a_run"].mkdir()
    (f["not_a_run"] / "notes.txt").write_text("mine\n")
    return f


def _args(files, out, row):
    """Fill the placeholders of a table row: {name} -> files[name], OUT -> a fresh output path."""
    return [str(out) if a == "OUT" else re.sub(r"\{(\w+)\}", lambda m: str(files[m.group(1)]), a) for a in row]


T = ["vae-cluster", "train", "--data", "digits"]
BAD_TRAIN = [
    # the bad inputs first found by hand
    ("config epochs: many", [*T, "--config", "{cfg_badtype}", *TINY[2:], "--out", "OUT"], "settings.epochs"),
    ("config malformed YAML", [*T, "--config", "{cfg_malformed}", *TINY, "--out", "OUT"], "cfg_malformed.yaml"),
    ("config is a folder", [*T, "--config", "{cfg_dir}", *TINY, "--out", "OUT"], "is a folder"),
    (
        "config empty, bad flag",
        [*T, "--config", "{cfg_empty}", *TINY, "--settings.epochs", "0", "--out", "OUT"],
        "--settings.epochs 0",
    ),
    ("config non-UTF-8", [*T, "--config", "{cfg_latin1}", *TINY, "--out", "OUT"], "not UTF-8"),
    ("config YAML list", [*T, "--config", "{cfg_list}", *TINY, "--out", "OUT"], "mapping"),
    ("config missing", [*T, "--config", "{missing}", *TINY, "--out", "OUT"], "not found"),
    ("config python tag", [*T, "--config", "{cfg_python}", *TINY, "--out", "OUT"], "cfg_python.yaml"),
    ("config unknown nested key", [*T, "--config", "{cfg_unknown_nested}", *TINY, "--out", "OUT"], "settings.epoch"),
    ("config unknown top key", [*T, "--config", "{cfg_unknown_top}", *TINY, "--out", "OUT"], "bogus"),
    ("config epochs 0", [*T, "--config", "{cfg_zero}", *TINY[2:], "--out", "OUT"], "settings.epochs"),
    (
        "gzip IDX zlib error",
        ["vae-cluster", "train", "--data", "{idx_zlib}", *TINY, "--out", "OUT"],
        "train-images-idx3-ubyte.gz",
    ),
    ("npz zero images", ["vae-cluster", "train", "--data", "{zero_images}", *TINY, "--out", "OUT"], "no images"),
    ("npz labels all -1", ["vae-cluster", "train", "--data", "{labels_minus1}", *TINY, "--out", "OUT"], "labels"),
    ("empty npz", ["vae-cluster", "train", "--data", "{empty_npz}", *TINY, "--out", "OUT"], "empty.npz"),
    ("device tpu", [*T, *TINY, "--device", "tpu", "--out", "OUT"], "--device"),
    ("epochs ten", [*T, *TINY, "--settings.epochs", "ten", "--out", "OUT"], "--settings.epochs"),
    ("lr nan", [*T, *TINY, "--settings.lr", "nan", "--out", "OUT"], "--settings.lr"),
    ("lr -1", [*T, *TINY, "--settings.lr", "-1", "--out", "OUT"], "--settings.lr"),
    ("recon_weight -1", [*T, *TINY, "--settings.recon_weight", "-1", "--out", "OUT"], "--settings.recon_weight"),
    ("gmm_restarts 0", [*T, *TINY, "--settings.gmm_restarts", "0", "--out", "OUT"], "--settings.gmm_restarts"),
    (
        "spectral_neighbors -5",
        [*T, *TINY, "--settings.spectral_neighbors", "-5", "--out", "OUT"],
        "--settings.spectral_neighbors",
    ),
    ("out /dev/null", [*T, *TINY, "--out", "/dev/null"], "/dev/null"),
    ("out a regular file", [*T, *TINY, "--out", "{file}"], "regular_file"),
    ("out under /proc", [*T, *TINY, "--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("typo in a flag", [*T, *TINY, "--setings.epochs", "1", "--out", "OUT"], "setings"),
    # every constrained parameter
    ("epochs 0", [*T, *TINY, "--settings.epochs", "0", "--out", "OUT"], "--settings.epochs 0"),
    ("epochs 1.5", [*T, *TINY, "--settings.epochs", "1.5", "--out", "OUT"], "--settings.epochs"),
    ("batch_size 0", [*T, *TINY, "--settings.batch_size", "0", "--out", "OUT"], "--settings.batch_size"),
    ("batch_size > images", [*T, *TINY, "--settings.batch_size", "5000", "--out", "OUT"], "--settings.batch_size"),
    ("lr 0", [*T, *TINY, "--settings.lr", "0", "--out", "OUT"], "--settings.lr"),
    ("lr inf", [*T, *TINY, "--settings.lr", "inf", "--out", "OUT"], "settings.lr"),
    ("latent_dim 0", [*T, *TINY, "--settings.latent_dim", "0", "--out", "OUT"], "--settings.latent_dim"),
    ("num_classes 1", [*T, *TINY, "--settings.num_classes", "1", "--out", "OUT"], "--settings.num_classes"),
    (
        "num_classes > images",
        [
            *T,
            "--settings.epochs",
            "1",
            "--settings.pretrain_epochs",
            "0",
            "--settings.num_classes",
            "2000",
            "--out",
            "OUT",
        ],
        "--settings.num_classes",
    ),
    ("kl bad choice", [*T, *TINY, "--settings.kl", "exact", "--out", "OUT"], "--settings.kl"),
    ("prior bad choice", [*T, *TINY, "--settings.prior", "vade", "--out", "OUT"], "--settings.prior"),
    ("learned prior without balance", [*T, *TINY, "--settings.prior", "learned", "--out", "OUT"], "balance true"),
    ("manifold bad choice", [*T, *TINY, "--settings.manifold", "tsne", "--out", "OUT"], "--settings.manifold"),
    ("self_training negative", [*T, *TINY, "--settings.self_training", "-1", "--out", "OUT"], "self_training"),
    ("anchor negative", [*T, *TINY, "--settings.anchor", "-1", "--out", "OUT"], "--settings.anchor"),
    ("anchor_epochs 0", [*T, *TINY, "--settings.anchor_epochs", "0", "--out", "OUT"], "--settings.anchor_epochs"),
    ("anchor_epochs text", [*T, *TINY, "--settings.anchor_epochs", "ten", "--out", "OUT"], "--settings.anchor_epochs"),
    ("preset unknown", [*T, *TINY, "--preset", "su2019", "--out", "OUT"], "--preset"),
    ("recon_weight 0", [*T, *TINY, "--settings.recon_weight", "0", "--out", "OUT"], "--settings.recon_weight"),
    ("balance maybe", [*T, *TINY, "--settings.balance", "maybe", "--out", "OUT"], "--settings.balance"),
    ("batch_balance -0.5", [*T, *TINY, "--settings.batch_balance", "-0.5", "--out", "OUT"], "--settings.batch_balance"),
    (
        "pretrain_epochs -1",
        [*T, *TINY, "--settings.pretrain_epochs", "-1", "--out", "OUT"],
        "--settings.pretrain_epochs",
    ),
    (
        "classifier_fit_steps -1",
        [*T, *TINY, "--settings.classifier_fit_steps", "-1", "--out", "OUT"],
        "--settings.classifier_fit_steps",
    ),
    (
        "spectral_neighbors >= images",
        [*T, *TINY, "--settings.spectral_neighbors", "5000", "--out", "OUT"],
        "--settings.spectral_neighbors",
    ),
    ("consistency -1", [*T, *TINY, "--settings.consistency", "-1", "--out", "OUT"], "--settings.consistency"),
    ("backbone resnet", [*T, *TINY, "--settings.backbone", "resnet", "--out", "OUT"], "--settings.backbone"),
    ("backbone conv on 8x8", [*T, *TINY, "--settings.backbone", "conv", "--out", "OUT"], "28×28"),
    ("seed -1", [*T, *TINY, "--settings.seed", "-1", "--out", "OUT"], "--settings.seed"),
    (
        "eval_every_epochs -1",
        [*T, *TINY, "--settings.eval_every_epochs", "-1", "--out", "OUT"],
        "--settings.eval_every_epochs",
    ),
    ("device mps", [*T, *TINY, "--device", "mps", "--out", "OUT"], "mps"),
    ("device cuda:x", [*T, *TINY, "--device", "cuda:x", "--out", "OUT"], "--device"),
    # data files
    ("data missing", ["vae-cluster", "train", "--data", "{missing}", *TINY, "--out", "OUT"], "unknown data set"),
    ("data empty", ["vae-cluster", "train", "--data", "", *TINY, "--out", "OUT"], "--data ''"),
    (
        "config data: null",
        ["vae-cluster", "train", "--config", "{cfg_data_null}", *TINY, "--out", "OUT"],
        "--data None",
    ),
    ("data a text file", ["vae-cluster", "train", "--data", "{text}", *TINY, "--out", "OUT"], "data.txt"),
    ("IDX truncated", ["vae-cluster", "train", "--data", "{idx_truncated}", *TINY, "--out", "OUT"], "truncated"),
    ("IDX counts differ", ["vae-cluster", "train", "--data", "{idx_counts}", *TINY, "--out", "OUT"], "19 labels"),
    ("IDX train/test sizes", ["vae-cluster", "train", "--data", "{idx_sizes}", *TINY, "--out", "OUT"], "6×6"),
    ("IDX file missing", ["vae-cluster", "train", "--data", "{idx_missing}", *TINY, "--out", "OUT"], "t10k-labels"),
    ("npz negative labels", ["vae-cluster", "train", "--data", "{neg_labels}", *TINY, "--out", "OUT"], ">= 0"),
    (
        "npz fractional labels",
        ["vae-cluster", "train", "--data", "{frac_labels}", *TINY, "--out", "OUT"],
        "whole numbers",
    ),
    ("npz 2-d labels", ["vae-cluster", "train", "--data", "{labels_2d}", *TINY, "--out", "OUT"], "one label"),
    ("npz missing keys", ["vae-cluster", "train", "--data", "{missing_keys}", *TINY, "--out", "OUT"], "x_test, y_test"),
    ("npz counts differ", ["vae-cluster", "train", "--data", "{count_mismatch}", *TINY, "--out", "OUT"], "19 labels"),
    ("npz train/test sizes", ["vae-cluster", "train", "--data", "{size_mismatch}", *TINY, "--out", "OUT"], "7×7"),
    ("npz NaN images", ["vae-cluster", "train", "--data", "{nan_images}", *TINY, "--out", "OUT"], "NaN"),
    ("npz string images", ["vae-cluster", "train", "--data", "{string_images}", *TINY, "--out", "OUT"], "dtype"),
    (
        "npz object arrays",
        ["vae-cluster", "train", "--data", "{object_arrays}", *TINY, "--out", "OUT"],
        "object_arrays.npz",
    ),
    ("npz random bytes", ["vae-cluster", "train", "--data", "{random_npz}", *TINY, "--out", "OUT"], "random.npz"),
    ("npz a single array", ["vae-cluster", "train", "--data", "{single_array}", *TINY, "--out", "OUT"], "single array"),
    ("npz a folder", ["vae-cluster", "train", "--data", "{folder_npz}", *TINY, "--out", "OUT"], "folder"),
    # output folders and resume
    ("out under a regular file", [*T, *TINY, "--out", "{file}/sub"], "regular_file"),
    ("out non-empty, no flag", [*T, *TINY, "--out", "{run_copy}"], "not empty"),
    ("overwrite a foreign folder", [*T, *TINY, "--overwrite", "--out", "{not_a_run}"], "not a kexue run"),
    ("resume nothing there", [*T, *TINY, "--resume", "--out", "OUT"], "no run to resume"),
    ("resume without out", [*T, *TINY, "--resume"], "--out"),
    ("resume, no checkpoint", [*T, *TINY, "--resume", "--out", "{run_no_model}"], "no checkpoint"),
    (
        "resume changes the model",
        [*T, *TINY, "--settings.latent_dim", "5", "--resume", "--out", "{run_copy}"],
        "settings.latent_dim",
    ),
    ("resume and overwrite", [*T, *TINY, "--resume", "--overwrite", "--out", "{run_copy}"], "--resume"),
    ("pretrained missing", [*T, *TINY, "--pretrained", "{missing}", "--out", "OUT"], "no such run folder"),
    (
        "pretrained is the out folder",
        [
            *T,
            *TINY,
            "--settings.pretrain_epochs",
            "1",
            "--pretrained",
            "{run_copy}",
            "--out",
            "{run_copy}",
            "--overwrite",
        ],
        "would overwrite it",
    ),
    ("pretrained not a run", [*T, *TINY, "--pretrained", "{not_a_run}", "--out", "OUT"], "no config.yaml"),
    ("pretrained an lm run", [*T, *TINY, "--pretrained", "{run_lm}", "--out", "OUT"], "vae-cluster train"),
    ("pretrained, none here", [*T, *TINY, "--pretrained", "{run}", "--out", "OUT"], "no pre-training"),
    (
        "pretrained differently",
        [*T, *TINY, "--settings.pretrain_epochs", "1", "--pretrained", "{run}", "--out", "OUT"],
        "pretrain_epochs 0 (here 1)",
    ),
    (
        "pretrained on other data",
        [
            "vae-cluster",
            "train",
            "--data",
            "{big_images}",
            *TINY,
            "--settings.batch_size",
            "10",
            "--settings.spectral_neighbors",
            "0",
            "--pretrained",
            "{run}",
            "--out",
            "OUT",
        ],
        "pre-trained on digits",
    ),
]

E = ["vae-cluster", "eval"]
BAD_EVAL = [
    ("run missing", [*E, "--run", "{missing}"], "no such folder"),
    ("run a file", [*E, "--run", "{file}"], "not a folder"),
    ("run without model.json", [*E, "--run", "{run_no_model}"], "no trained model"),
    ("model.json malformed", [*E, "--run", "{run_bad_json}"], "model.json"),
    ("model.json a list", [*E, "--run", "{run_json_list}"], "model.json"),
    ("model.json without config", [*E, "--run", "{run_no_config_key}"], "config"),
    ("model.json extra config key", [*E, "--run", "{run_extra_key}"], "bogus"),
    ("model.json bad value", [*E, "--run", "{run_bad_value}"], "latent_dim"),
    ("weights missing", [*E, "--run", "{run_no_weights}"], "model.safetensors"),
    ("weights corrupt", [*E, "--run", "{run_bad_weights}"], "model.safetensors"),
    ("run of another command", [*E, "--run", "{run_lm}"], "lm-train"),
    ("a study folder", [*E, "--run", "{run_study}"], "seed-"),
    ("device tpu", [*E, "--run", "{run}", "--device", "tpu"], "--device"),
    ("data missing", [*E, "--run", "{run}", "--data", "{missing}"], "unknown data set"),
    ("data corrupt", [*E, "--run", "{run}", "--data", "{random_npz}"], "random.npz"),
    ("data of another size", [*E, "--run", "{run}", "--data", "{big_images}"], "28×28"),
    ("config unknown key", [*E, "--run", "{run}", "--config", "{cfg_unknown_top}"], "bogus"),
]

S = ["vae-cluster", "sample"]
BAD_SAMPLE = [
    ("per_class -3", [*S, "--run", "{run}", "--per_class", "-3", "--out", "OUT"], "--per_class"),
    ("per_class 0", [*S, "--run", "{run}", "--per_class", "0", "--out", "OUT"], "--per_class"),
    ("per_class ten", [*S, "--run", "{run}", "--per_class", "ten", "--out", "OUT"], "--per_class"),
    ("per_class 1000", [*S, "--run", "{run}", "--per_class", "1000", "--out", "OUT"], "--per_class"),
    ("seed -1", [*S, "--run", "{run}", "--seed", "-1", "--out", "OUT"], "--seed"),
    ("out a regular file", [*S, "--run", "{run}", "--out", "{file}"], "regular_file"),
    ("out under a regular file", [*S, "--run", "{run}", "--out", "{file}/sub"], "regular_file"),
    ("out under /proc", [*S, "--run", "{run}", "--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("out /dev/null", [*S, "--run", "{run}", "--out", "/dev/null"], "/dev/null"),
    ("run missing", [*S, "--run", "{missing}", "--out", "OUT"], "no such folder"),
    ("run of another command", [*S, "--run", "{run_lm}", "--out", "OUT"], "lm-train"),
    ("model.json malformed", [*S, "--run", "{run_bad_json}", "--out", "OUT"], "model.json"),
    ("data of another size", [*S, "--run", "{run}", "--data", "{big_images}", "--out", "OUT"], "28×28"),
    ("config malformed", [*S, "--run", "{run}", "--config", "{cfg_malformed}", "--out", "OUT"], "YAML"),
]

ST = ["vae-cluster", "study", "--data", "digits"]
BAD_STUDY = [
    ("seeds not numbers", [*ST, "--seeds", "a,b", *TINY, "--out", "OUT"], "--seeds"),
    ("seeds empty", [*ST, "--seeds", ",", *TINY, "--out", "OUT"], "--seeds"),
    ("seeds negative", [*ST, "--seeds", "-1", *TINY, "--out", "OUT"], "--seeds"),
    ("seeds repeated", [*ST, "--seeds", "0,0", *TINY, "--out", "OUT"], "--seeds"),
    ("epochs 0", [*ST, "--seeds", "0", *TINY, "--settings.epochs", "0", "--out", "OUT"], "--settings.epochs"),
    ("kl bad choice", [*ST, "--seeds", "0", *TINY, "--settings.kl", "x", "--out", "OUT"], "--settings.kl"),
    (
        "spectral_neighbors >= images",
        [*ST, "--seeds", "0", *TINY, "--settings.spectral_neighbors", "5000", "--out", "OUT"],
        "--settings.spectral_neighbors",
    ),
    ("device tpu", [*ST, "--seeds", "0", *TINY, "--device", "tpu", "--out", "OUT"], "--device"),
    (
        "data corrupt",
        ["vae-cluster", "study", "--data", "{empty_npz}", "--seeds", "0", *TINY, "--out", "OUT"],
        "empty.npz",
    ),
    ("results a folder", [*ST, "--seeds", "0", *TINY, "--results", "{cfg_dir}", "--out", "OUT"], "--results"),
    (
        "results under /proc",
        [*ST, "--seeds", "0", *TINY, "--results", "/proc/kexue_probe/r.json", "--out", "OUT"],
        "--results",
    ),
    ("out a regular file", [*ST, "--seeds", "0", *TINY, "--out", "{file}"], "regular_file"),
    ("out non-empty, no flag", [*ST, "--seeds", "0", *TINY, "--out", "{run_copy}"], "not empty"),
    ("resume nothing there", [*ST, "--seeds", "0", *TINY, "--resume", "--out", "OUT"], "no run to resume"),
    ("resume a train run", [*ST, "--seeds", "0", *TINY, "--resume", "--out", "{run_copy}"], "vae-cluster-train"),
    ("resume and overwrite", [*ST, "--seeds", "0", *TINY, "--resume", "--overwrite", "--out", "OUT"], "--resume"),
    ("config unknown nested key", [*ST, "--config", "{cfg_unknown_nested}", "--out", "OUT"], "settings.epoch"),
    (
        "pretrained, another seed's",
        [*ST, "--seeds", "1", *TINY, "--settings.pretrain_epochs", "0", "--pretrained", "{run}", "--out", "OUT"],
        "seed 0 (here 1)",
    ),
]

ROWS = (
    [pytest.param(*row[1:], id=f"train: {row[0]}") for row in BAD_TRAIN]
    + [pytest.param(*row[1:], id=f"eval: {row[0]}") for row in BAD_EVAL]
    + [pytest.param(*row[1:], id=f"sample: {row[0]}") for row in BAD_SAMPLE]
    + [pytest.param(*row[1:], id=f"study: {row[0]}") for row in BAD_STUDY]
)


@pytest.mark.parametrize("row, match", ROWS)
def test_bad_input_is_one_line(files, tmp_path, cli_error, row, match):
    out = tmp_path / "out"
    args = _args(files, out, row)
    # the folder the command would write into must stay as it was
    watched = Path(args[args.index("--out") + 1]) if "--out" in args else None
    if "--run" in args and watched is None:
        watched = Path(args[args.index("--run") + 1])
    if watched is not None and (str(watched).startswith(("/proc", "/dev")) or watched.is_file()):
        watched = None
    line = cli_error(args, out=watched, match=match)
    for name in ("idx_zlib", "idx_truncated", "empty_npz", "zero_images", "labels_minus1", "random_npz"):
        if f"{{{name}}}" in row:  # a bad data file is named in its error
            assert files[name].name in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there")
def test_cuda_when_absent_is_one_line(cli_error, tmp_path):
    cli_error([*T, *TINY, "--device", "cuda", "--out", tmp_path / "out"], out=tmp_path / "out", match="CUDA")


def test_empty_config_is_no_config(files, tmp_path, capsys):
    from kexue.cli import main

    out = tmp_path / "png"
    main(
        [
            "vae-cluster",
            "sample",
            "--run",
            str(files["run"]),
            "--config",
            str(files["cfg_empty"]),
            "--per_class",
            "1",
            "--out",
            str(out),
        ]
    )
    assert (out / "samples.png").is_file() and (out / "clusters.png").is_file()
