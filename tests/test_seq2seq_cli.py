"""`kexue seq2seq train / generate / eval` end to end on tiny corpora: the run folder (tokenizer + three
models), every decoding mode (Chinese text with the character tokenizer too), the documented evaluation
keys, a run's config.yaml rerunning it, resume, pseudo histories, and the recipes' metrics."""

import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("tokenizers")
pytest.importorskip("rouge_score")
pytest.importorskip("sacrebleu")

from kexue.cli import main
from kexue.data.pairs import load_pairs
from kexue.io import run_config
from kexue.recipes import seq2seq as recipe
from kexue.reproduce.seq2seq import BEAM, CORPUS, SETTINGS

TINY = [
    "--threads",
    "1",
    "--device",
    "cpu",
    "--settings.dim",
    "16",
    "--settings.heads",
    "2",
    "--settings.encoder_layers",
    "1",
    "--settings.decoder_layers",
    "1",
    "--settings.ff_mult",
    "2",
    "--settings.batch_size",
    "8",
    "--settings.eval_every",
    "2",
    "--settings.eval_pairs",
    "8",
    "--settings.max_source_tokens",
    "32",
]
ISSUE_KEYS = [
    "seq2seq.rougeL.l2r",
    "seq2seq.rougeL.r2l",
    "seq2seq.rougeL.bidirectional",
    "seq2seq.bleu.l2r",
    "seq2seq.bleu.r2l",
    "seq2seq.bleu.bidirectional",
    "seq2seq.latency_ratio_bidir_vs_l2r",
]


def write_tsv(path, pairs, cut=200):
    path.write_text("".join(f"{p.source[:cut]}\t{p.target}\t{p.group}\n" for p in pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2s")
    en, zh = load_pairs("debian-en"), load_pairs("debian-zh")
    return {
        "root": root,
        "en": write_tsv(root / "en.tsv", en.train[:160] + en.test[:30]),
        "zh": write_tsv(root / "zh.tsv", zh.train[:120], cut=60),
    }


def kexue(*args):
    main([str(a) for a in args])


def train_en(data, name, *flags):
    """A tiny English run (BPE of 300) in data["root"] / name, with ``flags`` on top."""
    out = data["root"] / name
    kexue("seq2seq", "train", "--corpus", data["en"], *TINY, "--settings.vocab_size", "300", *flags, "--out", out)
    return out


@pytest.fixture(scope="module")
def run(data):
    return train_en(data, "run", "--settings.steps", "4")


@pytest.fixture(scope="module")
def zh_run(data):
    """Chinese pairs, tokenizer auto -> characters, pseudo histories for the bidirectional model."""
    out = data["root"] / "zh-run"
    kexue(
        "seq2seq",
        "train",
        "--corpus",
        data["zh"],
        *TINY,
        "--settings.steps",
        "3",
        "--settings.cross_history",
        "pseudo",
        "--settings.max_target_tokens",
        "24",
        "--out",
        out,
    )
    return out


def test_train_writes_the_tokenizer_and_three_models(run):
    assert (run / "tokenizer.json").is_file()
    for name in recipe.MODELS:
        assert (run / name / "model.safetensors").is_file() and (run / name / "checkpoints").is_dir()
        cfg = json.loads((run / name / "model.json").read_text())
        assert cfg["directions"] == ("both" if name == "bidirectional" else name)
        assert cfg["tokenizer"] == "bpe" and cfg["dim"] == 16
    command, config = run_config(run)
    assert command == "seq2seq-train" and config["settings"]["steps"] == 4
    res = json.loads((run / "results.json").read_text())
    assert set(res) == {f"seq2seq.valid_ce.{m}" for m in recipe.MODELS}
    assert all(r["command"].startswith("kexue seq2seq train --corpus ") for r in res.values())


@pytest.mark.parametrize("decoding", ["l2r", "r2l", "bidirectional"])
def test_generate_in_each_mode(run, decoding, capsys):
    titles = recipe.generate(run, text="A small tool to convert images between formats.", decoding=decoding, beam=2)
    assert len(titles) == 1 and isinstance(titles[0].text, str)
    assert (titles[0].l2r_ids is not None) == (decoding == "bidirectional")
    capsys.readouterr()
    kexue("seq2seq", "generate", "--run", run, "--text", "An editor.", "--decoding", decoding, "--beam", "2")
    assert f"[{decoding}" in capsys.readouterr().out or decoding == "bidirectional"


def test_generate_from_a_file_with_processors_and_half_beam(run, data, capsys):
    texts = data["root"] / "texts.txt"
    texts.write_text("A game of chess.\n\nA library for JSON parsing.\nA text editor.\n", encoding="utf-8")
    capsys.readouterr()
    kexue(
        "seq2seq",
        "generate",
        "--run",
        run,
        "--file",
        texts,
        "--scoring",
        "half",
        "--beam",
        "2",
        "--no_repeat_ngram",
        "2",
        "--min_length",
        "2",
        "--repetition_penalty",
        "1.2",
        "--batch_size",
        "2",
    )
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # blank lines skipped, one title a text


def test_cross_weight_zero_trains_the_capacity_control(data, tmp_path, capsys):
    """λ = 0: the third model is one decoder trained on both directions that never reads the other; its
    figures (and the train summary) name it `shared`, so they never overwrite the bidirectional model's rows."""
    capsys.readouterr()
    out = train_en(data, "shared", "--settings.steps", "2", "--settings.cross_weight", "0")
    summary = capsys.readouterr().out
    assert ", shared " in summary and "bidirectional" not in summary
    cfg = json.loads((out / "bidirectional" / "model.json").read_text())
    assert cfg["directions"] == "both" and cfg["cross_weight"] == 0.0
    models, _, _ = recipe.load_models(out, ("bidirectional",))
    assert models["bidirectional"].cross is False
    results = tmp_path / "results.json"
    kexue(
        "seq2seq",
        "eval",
        "--run",
        out,
        "--beam",
        "2",
        "--max_pairs",
        "4",
        "--latency_pairs",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--results",
        results,
    )
    keys = set(json.loads(results.read_text()))
    assert not any("bidir" in k for k in keys)
    for key in ("seq2seq.rougeL.shared", "seq2seq.rougeL.shared_l2r", "seq2seq.latency_ratio_shared_vs_l2r.half"):
        assert key in keys
    assert "seq2seq.valid_ce.shared" in json.loads((out / "results.json").read_text())
    examples = json.loads((out / "eval-test.json").read_text())["examples"]
    assert set(examples[0]) == {"source", "reference", "l2r", "r2l", "shared"}


def test_chinese_run_uses_characters_and_pseudo_histories(zh_run, capsys):
    assert json.loads((zh_run / "bidirectional" / "model.json").read_text())["tokenizer"] == "char"
    assert (zh_run / "pseudo.safetensors").is_file()
    for decoding in ("l2r", "bidirectional"):
        titles = recipe.generate(zh_run, text="一个用于管理软件包的命令行工具。", decoding=decoding, beam=2)
        assert titles[0].text == "".join(titles[0].text.split()) or titles[0].text  # characters, decoded
    capsys.readouterr()
    kexue("seq2seq", "generate", "--run", zh_run, "--text", "国际象棋游戏", "--beam", "2")
    assert capsys.readouterr().out.strip()


def test_eval_writes_the_issue_keys_and_merges_results(run, data, tmp_path, capsys):
    results = tmp_path / "seq2seq.json"
    kexue(
        "seq2seq",
        "eval",
        "--run",
        run,
        "--beam",
        "2",
        "--max_pairs",
        "6",
        "--batch_size",
        "3",
        "--latency_pairs",
        "3",
        "--max_new_tokens",
        "5",
        "--examples",
        "2",
        "--results",
        results,
    )
    out = capsys.readouterr().out
    assert "ROUGE-L" in out and "reference:" in out
    merged = json.loads(results.read_text())
    for key in ISSUE_KEYS + ["seq2seq.latency_ratio_bidir_vs_l2r.su", "seq2seq.latency_ratio_bidir_vs_l2r.half"]:
        assert key in merged and merged[key]["value"] >= 0
        assert merged[key]["command"].startswith(f"kexue seq2seq eval --run {run} --beam 2")
    for d in ("l2r", "r2l", "bidirectional", "bidirectional_l2r", "bidirectional_r2l"):
        assert 0 <= merged[f"seq2seq.first4_acc.{d}"]["value"] <= 1
    details = json.loads((run / "eval-test.json").read_text())
    for d in ("l2r", "r2l"):  # each stream of the bidirectional beam scored alone; a clean sweep is the merge
        alone = merged[f"seq2seq.rougeL.bidirectional_{d}"]["value"]
        assert 0 <= alone <= 100
        if details["bidirectional_wins"][d] == details["pairs"]:
            assert alone == pytest.approx(merged["seq2seq.rougeL.bidirectional"]["value"])
    in_run = json.loads((run / "results.json").read_text())
    assert set(ISSUE_KEYS) <= set(in_run) and "seq2seq.valid_ce.l2r" in in_run  # merged, not replaced
    assert details["pairs"] == 6 and len(details["examples"]) == 2
    # the share of distinct titles (a decoder that ignores its source writes one title): sixths, references too
    shares = details["distinct_titles"]
    assert set(shares) == {"l2r", "r2l", "bidirectional", "reference"}
    assert all(round(6 * v, 9) in range(1, 7) for v in shares.values())
    test_pairs = recipe.load_corpus(str(data["en"]), "the test corpus")["test"][:6]
    assert shares["reference"] == len({p.target for p in test_pairs}) / 6
    # another split's figures go beside the test figures, not over them (the keys name no split)
    before = (run / "results.json").read_text()
    kexue("seq2seq", "eval", "--run", run, "--split", "valid", "--beam", "2", "--max_pairs", "3",
          "--latency_pairs", "2", "--max_new_tokens", "4", "--examples", "0")  # fmt: skip
    assert (run / "results.json").read_text() == before
    assert "seq2seq.rougeL.l2r" in json.loads((run / "results-valid.json").read_text())


def test_config_yaml_reruns_the_run(run, tmp_path):
    again = tmp_path / "again"
    kexue("seq2seq", "train", "--config", run / "config.yaml", "--out", again)
    first = json.loads((run / "results.json").read_text())
    second = json.loads((again / "results.json").read_text())
    for m in recipe.MODELS:
        assert second[f"seq2seq.valid_ce.{m}"]["value"] == pytest.approx(first[f"seq2seq.valid_ce.{m}"]["value"])
    assert (again / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()


def test_resume_continues_every_model(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    kexue("seq2seq", "train", "--config", run / "config.yaml", "--settings.steps", "6", "--resume", "--out", copy)
    for name in recipe.MODELS:
        steps = [json.loads(ln)["step"] for ln in (copy / name / "metrics.jsonl").read_text().splitlines()]
        assert max(steps) == 6 and (copy / name / "checkpoints" / "step-000006").is_dir()
    _, config = run_config(copy)
    assert config["settings"]["steps"] == 6
    kexue("seq2seq", "train", "--config", copy / "config.yaml", "--resume", "--out", copy)  # finished: a no-op


def test_metrics_by_hand():
    assert recipe.edge_accuracy([[1, 2, 3, 4, 5]], [[1, 9, 3, 4, 5]], 2) == (0.5, 1.0)
    assert recipe.edge_accuracy([[]], [[1, 2]], 4) == (0.0, 0.0)
    en = recipe.rouge(["real time strategy games"], ["real-time strategy game"], chinese=False)
    assert en["rouge1"] == pytest.approx(100.0)  # stemmed words, punctuation dropped
    zh = recipe.rouge(["国际象棋"], ["国际象棋游戏"], chinese=True)  # characters: 4 of 6 recalled
    assert zh["rouge1"] == pytest.approx(100 * 2 * (1 * 4 / 6) / (1 + 4 / 6))
    assert recipe.bleu(["a b c d"], ["a b c d"], chinese=False) == pytest.approx(100.0)
    assert recipe.tokenizer_kind(["古代战争游戏", "a"], "auto") == "char"
    assert recipe.tokenizer_kind(["a strategy game"], "auto") == "bpe"


def test_pseudo_histories_follow_the_baselines_on_resume(zh_run, tmp_path, capsys):
    """Pseudo histories record the baselines' step; a resume that trains the baselines further decodes
    them again, a resume that does not reuses them."""
    from safetensors import safe_open

    copy = tmp_path / "zh"
    shutil.copytree(zh_run, copy)
    path = copy / "pseudo.safetensors"
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"l2r_step": "3", "r2l_step": "3"}
    capsys.readouterr()
    kexue("seq2seq", "train", "--config", copy / "config.yaml", "--resume", "--out", copy)  # finished: reused
    assert "decoding it again" not in capsys.readouterr().out
    kexue("seq2seq", "train", "--config", copy / "config.yaml", "--settings.steps", "5", "--resume", "--out", copy)
    assert "decoding it again" in capsys.readouterr().out
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"l2r_step": "5", "r2l_step": "5"}


def test_full_reproduce_runs_the_documented_measured_setting():
    """``kexue reproduce --full`` trains and evaluates with the settings, corpus, beam and test pairs of the
    command docs/seq2seq.md gives for the committed figures (benchmarks/results/seq2seq.json); threads and
    device are the machine's."""
    docs = (Path(__file__).parents[1] / "docs" / "seq2seq.md").read_text(encoding="utf-8")
    measured = docs[docs.index("## Measured") :]
    block = measured[measured.index("```bash") : measured.index("```", measured.index("```bash") + 7)]
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("kexue")]
    (train,) = (line for line in lines if line.startswith("kexue seq2seq train"))
    (evaluate,) = (
        line
        for line in lines
        if line.startswith("kexue seq2seq eval") and line.endswith("--results benchmarks/results/seq2seq.json")
    )
    words = train.split()
    documented = {
        w.removeprefix("--settings."): words[i + 1] for i, w in enumerate(words) if w.startswith("--settings.")
    }
    full = SETTINGS[False]["train"]
    assert set(documented) == set(full)
    for key, value in full.items():
        assert (value if isinstance(value, str) else float(value)) == (
            documented[key] if isinstance(value, str) else float(documented[key])
        ), key
    assert words[words.index("--corpus") + 1] == CORPUS
    words = evaluate.split()
    assert str(SETTINGS[False]["eval"]["max_pairs"]) == words[words.index("--max_pairs") + 1]
    beam = (
        words[words.index("--beam") + 1]
        if "--beam" in words
        else inspect.signature(recipe.evaluate_seq2seq).parameters["beam"].default
    )
    assert int(beam) == BEAM
    assert "--scoring" not in words or words[words.index("--scoring") + 1] == "su"  # the default, Su's k² pairs


def test_text_in_another_script_than_the_runs_tokenizer_warns(run, zh_run, capsys):
    """Chinese into an English (BPE) run, English into a Chinese (char) run: titles still come, with one
    warning line on stderr; text like the run's, or Chinese with a few Latin words, gives none."""
    capsys.readouterr()
    for folder, text, warned in (
        (run, "一个用于管理软件包的命令行工具。", True),
        (zh_run, "A command-line tool to manage software packages.", True),
        (run, "A command-line tool to manage software packages.", False),
        (zh_run, "一个用于管理软件包的命令行工具。", False),
        (zh_run, "libfoo 的 Python 3 绑定", False),  # mixed, as Chinese descriptions often are
    ):
        kexue("seq2seq", "generate", "--run", folder, "--text", text, "--decoding", "l2r", "--beam", "2")
        io = capsys.readouterr()
        assert len(io.out.splitlines()) == 1
        warnings = [line for line in io.err.splitlines() if line.startswith("kexue: warning:")]
        assert len(warnings) == int(warned), io.err
        if warned:
            assert "tokenizer is " + ("bpe" if folder == run else "char") in warnings[0]


def test_the_baselines_do_not_depend_on_the_cross_settings(data):
    """λ and the history setting touch only the bidirectional model: a λ = 0 (capacity control) run and a
    pseudo-history run train bit-identical L2R and R2L baselines, so one run's baselines serve the other."""
    a = train_en(data, "base-a", "--settings.steps", "3", "--settings.cross_weight", "0")
    b = train_en(data, "base-b", "--settings.steps", "3", "--settings.cross_history", "pseudo")
    for name in ("l2r", "r2l"):
        wa, wb = load_file(a / name / "model.safetensors"), load_file(b / name / "model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert (a / name / "metrics.jsonl").read_text() == (b / name / "metrics.jsonl").read_text()
    wa, wb = load_file(a / "bidirectional" / "model.safetensors"), load_file(b / "bidirectional" / "model.safetensors")
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)  # the third models do differ


def test_the_summary_counts_the_pairs_left_out_for_a_long_target(data, capsys):
    out = train_en(data, "short", "--settings.steps", "1", "--settings.max_target_tokens", "20")
    tokenizer = recipe.load_tokenizer(out)
    train = recipe.load_corpus(str(data["en"]))["train"]
    long = sum(len(tokenizer.encode(p.target).ids) > 20 for p in train)
    assert 0 < long < len(train) - 8
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith(f"seq2seq: {len(train) - long} pairs ({long} more left out: a target empty or over ")
