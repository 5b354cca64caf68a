"""Bad input to `kexue seq2seq build-corpus / train / generate / eval`.

Every row runs the CLI in-process and must end in one line `kexue: error: ...` (exit 2), with no
traceback and nothing left in the output folder (the `cli_error` fixture). Rows cover every
constrained parameter (zero, negative, out of range, wrong type, bad choice), cross-field rules,
bad pair files (TSV / JSONL: missing field, empty target, non-UTF-8, malformed, unknown key, empty,
a folder, a wrong name), bad run folders (missing, a file, not a run, a run of another command,
unfinished, malformed / extra-key model.json, missing / malformed tokenizer.json, a moved corpus),
bad --out / --results / --config, and resume misuse.

Placeholders: {tsv} a good pairs file, {run} a tiny trained run (built once per module), {bad} a
folder of broken files and run folders, {out} a fresh output path.
"""

import json
import shutil

import pytest

pytest.importorskip("tokenizers")

from kexue.cli import main
from kexue.data.pairs import load_pairs

TRAIN = [
    "seq2seq",
    "train",
    "--corpus",
    "{tsv}",
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
    "--settings.steps",
    "2",
    "--settings.batch_size",
    "8",
    "--settings.eval_every",
    "2",
    "--settings.eval_pairs",
    "4",
    "--settings.vocab_size",
    "300",
]
GEN = ["seq2seq", "generate", "--run", "{run}", "--text", "A text editor.", "--beam", "2"]
EVAL = ["seq2seq", "eval", "--run", "{run}", "--beam", "2", "--max_pairs", "2"]
BUILD = ["seq2seq", "build-corpus", "--out", "{out}", "--offline", "true", "--work", "{bad}/apt"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-s2s")
    en = load_pairs("debian-en")
    tsv = root / "pairs.tsv"
    tsv.write_text("".join(f"{p.source[:150]}\t{p.target}\t{p.group}\n" for p in en.train[:80]), encoding="utf-8")
    run = root / "run"
    main([a.format(tsv=tsv) for a in TRAIN] + ["--out", str(run)])
    bad = root / "bad"
    bad.mkdir()
    (bad / "apt").mkdir()
    (bad / "notab.tsv").write_text("a source\ta title\nno tab here\n", encoding="utf-8")
    (bad / "fourfields.tsv").write_text("a\tb\tc\td\n", encoding="utf-8")
    (bad / "emptytarget.tsv").write_text("a source\t \n", encoding="utf-8")
    (bad / "latin1.tsv").write_bytes("a source\tcaf\xe9\n".encode("latin-1"))
    (bad / "empty.tsv").write_text("\n\n", encoding="utf-8")
    (bad / "folder.tsv").mkdir()
    (bad / "pairs.csv").write_text("a,b\n", encoding="utf-8")
    (bad / "broken.jsonl").write_text('{"source": "a", "target": "b"}\n{"source": "a",\n', encoding="utf-8")
    (bad / "notarget.jsonl").write_text('{"source": "a text"}\n', encoding="utf-8")
    (bad / "extra.jsonl").write_text('{"source": "a", "target": "b", "title": "c"}\n', encoding="utf-8")
    (bad / "list.jsonl").write_text('["a", "b"]\n', encoding="utf-8")
    (bad / "corrupt.tsv.gz").write_bytes(b"not gzip at all")
    (bad / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (bad / "blank.txt").write_text("\n \n", encoding="utf-8")
    (bad / "a-file").write_text("x", encoding="utf-8")
    (bad / "empty-dir").mkdir()
    (bad / "bad.yaml").write_text("settings: [unclosed\n", encoding="utf-8")
    (bad / "unknown.yaml").write_text("corpus: debian-en\nwidth: 3\n", encoding="utf-8")
    (bad / "results-dir").mkdir()
    (bad / "malformed-results.json").write_text("{not json", encoding="utf-8")
    lm = bad / "lm-run"
    lm.mkdir()
    (lm / "config.yaml").write_text("# kexue run config: lm-train\ncorpus: ptb\n", encoding="utf-8")
    unfinished = bad / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "config.yaml", unfinished / "config.yaml")
    variants = {
        "no-tokenizer": lambda r: (r / "tokenizer.json").unlink(),
        "bad-tokenizer": lambda r: (r / "tokenizer.json").write_text("{broken", encoding="utf-8"),
        "bad-model-json": lambda r: (r / "l2r" / "model.json").write_text("[1, 2]", encoding="utf-8"),
        "extra-model-key": lambda r: (r / "bidirectional" / "model.json").write_text(
            json.dumps({**json.loads((r / "bidirectional" / "model.json").read_text()), "width": 3}),
            encoding="utf-8",
        ),
        "no-bidirectional": lambda r: shutil.rmtree(r / "bidirectional"),
        "corrupt-weights": lambda r: (r / "bidirectional" / "model.safetensors").write_bytes(b"\x00" * 20),
        "moved-corpus": lambda r: (r / "config.yaml").write_text(
            (r / "config.yaml").read_text().replace(str(tsv), str(root / "gone.tsv")), encoding="utf-8"
        ),
    }
    for name, spoil in variants.items():
        shutil.copytree(run, bad / name, ignore=shutil.ignore_patterns("checkpoints"))
        spoil(bad / name)
    nockpt = bad / "no-checkpoints"
    nockpt.mkdir()
    shutil.copy(run / "config.yaml", nockpt / "config.yaml")
    (nockpt / "notes.txt").write_text("x", encoding="utf-8")
    return {"tsv": tsv, "run": run, "bad": bad}


def with_flag(args, flag, value):
    """``args`` with ``flag`` set to ``value`` (replaced when present, appended otherwise)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
        return args
    return args + [flag, value]


ROWS = [
    # --- train: constrained settings
    ("train-dim-zero", with_flag(TRAIN, "--settings.dim", "0"), "--settings.dim"),
    ("train-dim-negative", with_flag(TRAIN, "--settings.dim", "-16"), "--settings.dim"),
    ("train-dim-heads", with_flag(TRAIN, "--settings.dim", "15"), "multiple of --settings.heads"),
    ("train-layers-type", with_flag(TRAIN, "--settings.encoder_layers", "two"), "--settings.encoder_layers"),
    ("train-steps-zero", with_flag(TRAIN, "--settings.steps", "0"), "--settings.steps"),
    ("train-batch-zero", with_flag(TRAIN, "--settings.batch_size", "0"), "--settings.batch_size"),
    ("train-batch-too-big", with_flag(TRAIN, "--settings.batch_size", "5000"), "exceeds"),
    ("train-lr-negative", with_flag(TRAIN, "--settings.lr", "-1e-3"), "--settings.lr"),
    ("train-lr-type", with_flag(TRAIN, "--settings.lr", "fast"), "--settings.lr"),
    ("train-dropout-one", with_flag(TRAIN, "--settings.dropout", "1.0"), "--settings.dropout"),
    ("train-cross-dropout", with_flag(TRAIN, "--settings.cross_dropout", "-0.1"), "--settings.cross_dropout"),
    ("train-lambda-negative", with_flag(TRAIN, "--settings.cross_weight", "-0.1"), "--settings.cross_weight"),
    (
        "train-lambda-zero-pseudo",
        with_flag(with_flag(TRAIN, "--settings.cross_weight", "0"), "--settings.cross_history", "pseudo"),
        "reads no history",
    ),
    ("train-history-choice", with_flag(TRAIN, "--settings.cross_history", "silver"), "--settings.cross_history"),
    ("train-tokenizer-choice", with_flag(TRAIN, "--settings.tokenizer", "wordpiece"), "--settings.tokenizer"),
    ("train-vocab-small", with_flag(TRAIN, "--settings.vocab_size", "100"), "--settings.vocab_size 100"),
    ("train-max-source-zero", with_flag(TRAIN, "--settings.max_source_tokens", "0"), "--settings.max_source"),
    ("train-max-target-short", with_flag(TRAIN, "--settings.max_target_tokens", "1"), "max_target_tokens"),
    ("train-max-pairs-zero", with_flag(TRAIN, "--settings.max_train_pairs", "0"), "--settings.max_train_pairs"),
    ("train-warmup-negative", with_flag(TRAIN, "--settings.warmup_steps", "-1"), "--settings.warmup_steps"),
    ("train-eval-every-negative", with_flag(TRAIN, "--settings.eval_every", "-2"), "--settings.eval_every"),
    ("train-eval-pairs-zero", with_flag(TRAIN, "--settings.eval_pairs", "0"), "--settings.eval_pairs"),
    ("train-seed-negative", with_flag(TRAIN, "--settings.seed", "-1"), "--settings.seed"),
    ("train-threads-zero", with_flag(TRAIN, "--threads", "0"), "--threads"),
    ("train-device", with_flag(TRAIN, "--device", "tpu"), "--device"),
    ("train-unknown-setting", TRAIN + ["--settings.width", "3"], "width"),
    # --- train: corpora and pair files
    ("train-corpus-name", with_flag(TRAIN, "--corpus", "wikipedia"), "unknown corpus"),
    ("train-corpus-missing", with_flag(TRAIN, "--corpus", "{bad}/missing.tsv"), "not found"),
    ("train-corpus-folder", with_flag(TRAIN, "--corpus", "{bad}/folder.tsv"), "folder"),
    ("train-tsv-no-tab", with_flag(TRAIN, "--corpus", "{bad}/notab.tsv"), "line 2"),
    ("train-tsv-four-fields", with_flag(TRAIN, "--corpus", "{bad}/fourfields.tsv"), "line 1"),
    ("train-tsv-empty-target", with_flag(TRAIN, "--corpus", "{bad}/emptytarget.tsv"), "empty target"),
    ("train-tsv-latin1", with_flag(TRAIN, "--corpus", "{bad}/latin1.tsv"), "not UTF-8"),
    ("train-tsv-empty", with_flag(TRAIN, "--corpus", "{bad}/empty.tsv"), "holds no pairs"),
    ("train-tsv-corrupt-gz", with_flag(TRAIN, "--corpus", "{bad}/corrupt.tsv.gz"), "corrupt"),
    ("train-csv-name", with_flag(TRAIN, "--corpus", "{bad}/pairs.csv"), ".tsv"),
    ("train-jsonl-broken", with_flag(TRAIN, "--corpus", "{bad}/broken.jsonl"), "line 2"),
    ("train-jsonl-no-target", with_flag(TRAIN, "--corpus", "{bad}/notarget.jsonl"), "missing 'target'"),
    ("train-jsonl-extra-key", with_flag(TRAIN, "--corpus", "{bad}/extra.jsonl"), "unknown key"),
    ("train-jsonl-list", with_flag(TRAIN, "--corpus", "{bad}/list.jsonl"), "JSON object"),
    # --- train: output, results, config, resume
    ("train-out-file", TRAIN + ["--out", "{bad}/a-file"], "--out"),
    ("train-out-not-empty", TRAIN + ["--out", "{run}"], "not empty"),
    ("train-results-folder", TRAIN + ["--results", "{bad}/results-dir"], "--results"),
    ("train-results-malformed", TRAIN + ["--results", "{bad}/malformed-results.json"], "malformed-results"),
    ("train-resume-empty", TRAIN + ["--resume", "--out", "{out}"], "--resume"),
    ("train-resume-overwrite", TRAIN + ["--resume", "--overwrite", "--out", "{run}"], "one of --resume"),
    ("train-resume-changed", with_flag(TRAIN, "--settings.dim", "32") + ["--resume", "--out", "{run}"], "dim"),
    ("train-resume-no-checkpoint", TRAIN + ["--resume", "--out", "{bad}/no-checkpoints"], "checkpoint"),
    ("train-config-malformed", ["seq2seq", "train", "--config", "{bad}/bad.yaml"], "bad.yaml"),
    ("train-config-unknown", ["seq2seq", "train", "--config", "{bad}/unknown.yaml"], "width"),
    ("train-config-missing", ["seq2seq", "train", "--config", "{bad}/nope.yaml"], "nope.yaml"),
    # --- generate: inputs and flags
    ("gen-no-run", ["seq2seq", "generate", "--text", "x"], "--run"),
    ("gen-no-text", ["seq2seq", "generate", "--run", "{run}"], "--text"),
    ("gen-text-and-file", GEN + ["--file", "{bad}/blank.txt"], "one of --text and --file"),
    ("gen-empty-text", with_flag(GEN, "--text", "  "), "--text is empty"),
    ("gen-file-missing", ["seq2seq", "generate", "--run", "{run}", "--file", "{bad}/nope.txt"], "nope.txt"),
    ("gen-file-folder", ["seq2seq", "generate", "--run", "{run}", "--file", "{bad}/empty-dir"], "empty-dir"),
    ("gen-file-latin1", ["seq2seq", "generate", "--run", "{run}", "--file", "{bad}/latin1.txt"], "latin1.txt"),
    ("gen-file-blank", ["seq2seq", "generate", "--run", "{run}", "--file", "{bad}/blank.txt"], "holds no text"),
    ("gen-decoding", with_flag(GEN, "--decoding", "sideways"), "--decoding"),
    ("gen-beam-zero", with_flag(GEN, "--beam", "0"), "--beam"),
    ("gen-beam-type", with_flag(GEN, "--beam", "2.5"), "--beam"),
    ("gen-scoring", GEN + ["--scoring", "best"], "--scoring"),
    ("gen-half-odd-beam", with_flag(GEN, "--beam", "3") + ["--scoring", "half"], "even --beam"),
    ("gen-length-penalty", GEN + ["--length_penalty", "-1"], "--length_penalty"),
    ("gen-max-new-zero", GEN + ["--max_new_tokens", "0"], "--max_new_tokens"),
    ("gen-min-length-cap", GEN + ["--min_length", "5", "--max_new_tokens", "3"], "--min_length 5"),
    ("gen-no-repeat-negative", GEN + ["--no_repeat_ngram", "-1"], "--no_repeat_ngram"),
    ("gen-repetition-zero", GEN + ["--repetition_penalty", "0"], "--repetition_penalty"),
    ("gen-batch-zero", GEN + ["--batch_size", "0"], "--batch_size"),
    ("gen-threads-negative", GEN + ["--threads", "-1"], "--threads"),
    ("gen-device", GEN + ["--device", "gpu0"], "--device"),
    # --- generate: run folders
    ("gen-run-missing", with_flag(GEN, "--run", "{bad}/nope"), "not found"),
    ("gen-run-file", with_flag(GEN, "--run", "{bad}/a-file"), "not a folder"),
    ("gen-run-not-a-run", with_flag(GEN, "--run", "{bad}/empty-dir"), "not a kexue run folder"),
    ("gen-run-other-command", with_flag(GEN, "--run", "{bad}/lm-run"), "lm-train"),
    ("gen-run-unfinished", with_flag(GEN, "--run", "{bad}/unfinished"), "no trained bidirectional model"),
    ("gen-run-no-tokenizer", with_flag(GEN, "--run", "{bad}/no-tokenizer"), "tokenizer.json"),
    ("gen-run-bad-tokenizer", with_flag(GEN, "--run", "{bad}/bad-tokenizer"), "tokenizer"),
    ("gen-run-bad-model-json", with_flag(GEN, "--run", "{bad}/bad-model-json") + ["--decoding", "l2r"], "model.json"),
    ("gen-run-extra-key", with_flag(GEN, "--run", "{bad}/extra-model-key"), "width"),
    ("gen-run-corrupt-weights", with_flag(GEN, "--run", "{bad}/corrupt-weights"), "model.safetensors"),
    # --- eval
    ("eval-split", EVAL + ["--split", "dev"], "--split"),
    ("eval-beam-negative", with_flag(EVAL, "--beam", "-4"), "--beam"),
    ("eval-half-odd", with_flag(EVAL, "--beam", "3") + ["--scoring", "half"], "even --beam"),
    ("eval-max-pairs-zero", with_flag(EVAL, "--max_pairs", "0"), "--max_pairs"),
    ("eval-latency-zero", EVAL + ["--latency_pairs", "0"], "--latency_pairs"),
    ("eval-examples-negative", EVAL + ["--examples", "-1"], "--examples"),
    ("eval-length-penalty-type", EVAL + ["--length_penalty", "long"], "--length_penalty"),
    ("eval-results-folder", EVAL + ["--results", "{bad}/results-dir"], "--results"),
    ("eval-results-malformed", EVAL + ["--results", "{bad}/malformed-results.json"], "malformed-results"),
    ("eval-run-other-command", with_flag(EVAL, "--run", "{bad}/lm-run"), "lm-train"),
    ("eval-run-no-bidirectional", with_flag(EVAL, "--run", "{bad}/no-bidirectional"), "bidirectional"),
    ("eval-run-bad-model-json", with_flag(EVAL, "--run", "{bad}/bad-model-json"), "model.json"),
    ("eval-run-moved-corpus", with_flag(EVAL, "--run", "{bad}/moved-corpus"), "gone.tsv"),
    # --- build-corpus (nothing is fetched: every row fails before apt)
    ("build-no-out", ["seq2seq", "build-corpus"], "--out"),
    ("build-out-file", with_flag(BUILD, "--out", "{bad}/a-file"), "--out"),
    ("build-offline-no-work", ["seq2seq", "build-corpus", "--out", "{out}", "--offline", "true"], "--work"),
    ("build-offline-missing-work", with_flag(BUILD, "--work", "{bad}/nope"), "--work"),
    ("build-work-file", with_flag(BUILD, "--work", "{bad}/a-file"), "--work"),
    ("build-offline-empty-work", BUILD, "apt"),
    ("build-seed-negative", BUILD + ["--seed", "-1"], "--seed"),
    ("build-offline-type", with_flag(BUILD, "--offline", "maybe"), "--offline"),
]


@pytest.mark.parametrize("args,match", [pytest.param(a, m, id=i) for i, a, m in ROWS])
def test_bad_input_is_one_line(files, tmp_path, cli_error, args, match):
    out = tmp_path / "out"
    args = [a.format(out=out, **files) for a in args]
    before = sorted(p.name for p in files["run"].rglob("*"))
    cli_error(args, out=out, match=match.format(out=out, **files))
    assert not out.exists()
    assert sorted(p.name for p in files["run"].rglob("*")) == before  # the shared run is never touched
