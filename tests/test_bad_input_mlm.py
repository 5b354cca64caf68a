"""Bad input to `kexue mlm train / gibbs` and `kexue bench gibbs` (article 6).

Every row runs the CLI in-process and must end in one line `kexue: error: ...` (exit 2), with no
traceback and nothing left in the output folder (the `cli_error` fixture).

Placeholders: {corpus} a good corpus folder, {tiny} a tiny random BertForMaskedLM folder, {run} a
tiny finished `mlm train` run (built once per module), {bad} a folder of broken files and run
folders, {out} a fresh output path.
"""

from __future__ import annotations

import pytest
from mlm_helpers import tiny_corpus, tiny_mlm_folder

from kexue.cli import main

pytest.importorskip("transformers")

TRAIN = ["mlm", "train", "--corpus", "{corpus}", "--settings.base", "{tiny}", "--settings.steps", "2",
         "--settings.batch_size", "4", "--settings.max_len", "16",
         "--settings.eval_every", "2", "--threads", "1"]  # fmt: skip
GIBBS = ["mlm", "gibbs", "--model", "{run}", "--chains", "2", "--steps", "4", "--burn_in", "1",
         "--min_length", "3", "--max_length", "6"]  # fmt: skip
BENCH = ["bench", "gibbs", "--model", "{tiny}", "--length", "6", "--chains", "2", "--steps", "2", "--repeats", "1"]


def with_flag(base, flag, value):
    """``base`` with ``flag`` set to ``value`` (replaced if present, appended if not)."""
    args = list(base)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


ROWS = [
    # mlm train: each constrained parameter class
    (with_flag(TRAIN, "--settings.steps", "0"), "steps"),
    (with_flag(TRAIN, "--settings.steps", "-3"), "steps"),
    (with_flag(TRAIN, "--settings.steps", "many"), "steps"),
    (with_flag(TRAIN, "--settings.batch_size", "0"), "batch_size"),
    (with_flag(TRAIN, "--settings.mask_rate", "0"), "mask_rate"),
    (with_flag(TRAIN, "--settings.mask_rate", "1.5"), "mask_rate"),
    (with_flag(TRAIN, "--settings.lr", "0"), "lr"),
    (with_flag(TRAIN, "--settings.lr", "nan"), "lr"),
    (with_flag(TRAIN, "--settings.eval_every", "-1"), "eval_every"),
    (with_flag(TRAIN, "--settings.max_len", "2"), "max_len"),
    (with_flag(TRAIN, "--settings.max_len", "500"), "max_len"),
    (with_flag(TRAIN, "--settings.max_sentences", "0"), "max_sentences"),
    (with_flag(TRAIN, "--settings.seed", "-1"), "seed"),
    (with_flag(TRAIN, "--threads", "0"), "threads"),
    (with_flag(TRAIN, "--settings.batch_size", "1000"), "batch_size"),
    (
        with_flag(
            with_flag(with_flag(TRAIN, "--settings.base", "scratch"), "--settings.dim", "10"), "--settings.heads", "4"
        ),
        "dim",
    ),
    # mlm train: bad bases and corpora
    (with_flag(TRAIN, "--settings.base", "{bad}/nowhere"), "--settings.base"),
    (with_flag(TRAIN, "--settings.base", "{bad}/file.txt"), "--settings.base"),
    (with_flag(TRAIN, "--settings.base", "{bad}/empty"), "--settings.base"),
    (with_flag(TRAIN, "--settings.base", "{bad}/no_tokenizer"), "tokenizer.json"),
    (with_flag(TRAIN, "--settings.base", "{bad}/bad_tokenizer"), "tokenizer"),
    (with_flag(TRAIN, "--settings.base", "{bad}/bad_config"), "config"),
    (with_flag(TRAIN, "--corpus", "{bad}/nowhere"), "corpus"),
    (with_flag(TRAIN, "--corpus", "{bad}/file.txt"), "corpus"),
    (with_flag(TRAIN, "--corpus", "{bad}/empty_corpus"), "no sentences"),
    (with_flag(TRAIN, "--corpus", "{bad}/latin1_corpus"), "UTF-8"),
    # mlm train: output paths
    (with_flag(TRAIN, "--results", "{bad}"), "--results"),
    (TRAIN + ["--resume"], "--resume"),
    # mlm gibbs: each constrained parameter class
    (with_flag(GIBBS, "--chains", "0"), "chains"),
    (with_flag(GIBBS, "--batch", "-1"), "batch"),
    (with_flag(GIBBS, "--steps", "x"), "steps"),
    (with_flag(GIBBS, "--burn_in", "-1"), "burn_in"),
    (with_flag(GIBBS, "--burn_in", "4"), "--burn_in"),
    (with_flag(GIBBS, "--thin", "0"), "thin"),
    (with_flag(GIBBS, "--thin", "9"), "--thin"),
    (with_flag(GIBBS, "--order", "zigzag"), "order"),
    (with_flag(GIBBS, "--fraction", "0"), "--fraction"),
    (with_flag(GIBBS, "--fraction", "1.5"), "fraction"),
    (with_flag(GIBBS, "--min_length", "0"), "min_length"),
    (with_flag(GIBBS, "--min_length", "9"), "--min_length"),
    (with_flag(GIBBS, "--max_length", "100"), "--max_length"),
    (with_flag(GIBBS, "--temperature", "0"), "temperature"),
    (with_flag(GIBBS, "--temperature", "-1"), "temperature"),
    (with_flag(GIBBS, "--top_k", "0"), "top_k"),
    (with_flag(GIBBS, "--references", "0"), "references"),
    (with_flag(GIBBS, "--seed", "-2"), "seed"),
    (with_flag(GIBBS, "--label", "a b"), "--label"),
    (with_flag(GIBBS, "--label", "real_text"), "--label real_text"),
    (with_flag(GIBBS, "--threads", "0"), "threads"),
    (with_flag(GIBBS, "--prompt", ""), "--prompt"),
    (with_flag(GIBBS, "--prompt", " ".join(["the"] * 60)), "--prompt"),
    # mlm gibbs: bad folders and files
    (with_flag(GIBBS, "--model", "{bad}/nowhere"), "not found"),
    (with_flag(GIBBS, "--model", "{bad}/file.txt"), "not a folder"),
    (with_flag(GIBBS, "--model", "{bad}/empty"), "not a masked-LM folder"),
    (with_flag(GIBBS, "--model", "{bad}/lm_run"), "not by mlm-train"),
    (with_flag(GIBBS, "--model", "{bad}/unfinished"), "no trained model"),
    (with_flag(GIBBS, "--model", "{bad}/bad_tokenizer"), "tokenizer"),
    (with_flag(GIBBS, "--model", "{bad}/bad_config"), "config"),
    (with_flag(GIBBS, "--model", "{bad}/bad_weights"), "masked LM"),
    (with_flag(GIBBS, "--corpus", "{bad}/nowhere"), "corpus"),
    (with_flag(GIBBS, "--lm", "{run}"), "--lm"),
    (with_flag(GIBBS, "--lm", "{bad}/nowhere"), "--lm"),
    (with_flag(GIBBS, "--results", "{bad}"), "--results"),
    (with_flag(GIBBS, "--results", "/proc/x/results.json"), "--results"),
    # bench gibbs
    (with_flag(BENCH, "--length", "0"), "length"),
    (with_flag(BENCH, "--length", "100"), "--length"),
    (with_flag(BENCH, "--chains", "0"), "chains"),
    (with_flag(BENCH, "--repeats", "-1"), "repeats"),
    (with_flag(BENCH, "--device", "tpu"), "device"),
    (with_flag(BENCH, "--model", "{bad}/nowhere"), "not found"),
    (with_flag(BENCH, "--model", "{bad}/lm_run"), "not by mlm-train"),
    (with_flag(BENCH, "--results", "{bad}"), "--results"),
    (with_flag(BENCH, "--threads", "0"), "threads"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_mlm")
    corpus, tiny = tiny_corpus(root / "corpus"), tiny_mlm_folder(root / "tiny")
    run = root / "run"
    main([str(a) for a in [*[a.format(corpus=corpus, tiny=tiny) for a in TRAIN], "--out", run]])
    bad = root / "bad"
    bad.mkdir()
    (bad / "file.txt").write_text("x\n")
    (bad / "empty").mkdir()
    (bad / "empty_corpus").mkdir()
    for split in ("train", "valid", "test"):
        (bad / "empty_corpus" / f"{split}.txt").write_text("")
    (bad / "latin1_corpus").mkdir()
    for split in ("train", "valid", "test"):
        (bad / "latin1_corpus" / f"{split}.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for name in ("no_tokenizer", "bad_tokenizer", "bad_config", "bad_weights"):
        tiny_mlm_folder(bad / name)
    (bad / "no_tokenizer" / "tokenizer.json").unlink()
    (bad / "bad_tokenizer" / "tokenizer.json").write_text("{not json")
    (bad / "bad_config" / "config.json").write_text("[1, 2")
    (bad / "bad_weights" / "model.safetensors").write_bytes(b"\x00" * 20)
    (bad / "lm_run").mkdir()
    (bad / "lm_run" / "config.yaml").write_text("# kexue run config: lm-train\ncorpus: ptb\n")
    (bad / "unfinished").mkdir()
    (bad / "unfinished" / "config.yaml").write_text("# kexue run config: mlm-train\ncorpus: ptb\n")
    return {"corpus": corpus, "tiny": tiny, "run": run, "bad": bad}


@pytest.mark.parametrize("args, match", ROWS, ids=[" ".join(r[0][:2]) + f" {r[1]}" for r in ROWS])
def test_bad_input(args, match, places, tmp_path, cli_error):
    out = tmp_path / "out"
    filled = [a.format(**places) for a in args] + ["--out", str(out)]
    cli_error(filled, out=out, match=match)


def test_out_is_a_file_or_a_used_folder(places, tmp_path, cli_error):
    f = tmp_path / "f.txt"
    f.write_text("x")
    for base in (TRAIN, GIBBS, BENCH):
        args = [a.format(**places) for a in base]
        cli_error(args + ["--out", str(f)], match="--out")
        cli_error(args + ["--out", str(places["run"])], out=places["run"], match="--out")
