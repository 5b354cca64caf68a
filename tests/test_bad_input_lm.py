"""Bad input to `kexue lm train / generate / termination` and `kexue onlstm train / parse / eval`.

Every row runs the CLI in-process and must end in one line `kexue: error: ...` (exit 2), with no
traceback and nothing left in the output folder (the `cli_error` fixture). Rows start from the
bad inputs first found by hand, then cover every constrained parameter, bad corpus
folders, bad run folders (missing / malformed / extra-key model.json, a run of another command,
corrupt checkpoints with --resume), bad --out / --results and bad --config files.

Placeholders in the rows: {corpus} a good corpus folder, {lm} / {onl} tiny trained runs (built
once per module), {bad} a folder of broken files and run folders, {out} a fresh output path.
"""

import json
import shutil

import pytest
import torch

from kexue.cli import main

WORDS = "the cat sat on a mat and dog ran to house".split()
# lm train / onlstm train: run-folder flags at the top, model and training settings under --settings.*
LM = [
    "lm",
    "train",
    "--corpus",
    "{corpus}",
    "--threads",
    "1",
    "--settings.dim",
    "16",
    "--settings.layers",
    "1",
    "--settings.steps",
    "3",
    "--settings.batch_size",
    "4",
    "--settings.bptt",
    "5",
    "--settings.eval_every",
    "3",
    "--settings.eval_tokens",
    "200",
]
ONL = [
    "onlstm",
    "train",
    "--corpus",
    "{corpus}",
    "--threads",
    "1",
    "--settings.emb",
    "8",
    "--settings.hidden",
    "8",
    "--settings.layers",
    "2",
    "--settings.chunk",
    "4",
    "--settings.steps",
    "3",
    "--settings.batch_size",
    "4",
    "--settings.bptt",
    "5",
    "--settings.eval_every",
    "3",
    "--settings.ckpt_every",
    "3",
]
GEN = ["lm", "generate", "--run", "{lm}", "--prompt", "the cat", "--max_new_tokens", "5"]
TERM = [
    "lm",
    "termination",
    "--models",
    "a={lm}",
    "--decoders",
    "greedy",
    "--prefixes",
    "3",
    "--cap",
    "5",
    "--corpus",
    "{corpus}",
]
PARSE = ["onlstm", "parse", "--model", "{onl}", "--sentences+", "the dog sees a cat"]
EVAL = ["onlstm", "eval", "--model", "{onl}"]

MRG = "( (S (NP-SBJ (DT The) (NN cat)) (VP (VBD sat)) (. .)) )\n"


def _corpus(folder, lines=120, words=12):
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(words + i % 5)) for i in range(lines)) + "\n"
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(text)
    return folder


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input-lm")
    corpus = _corpus(root / "corpus")
    lm, onl = root / "lm", root / "onl"
    for command, run in ((LM, lm), (ONL, onl)):
        args = [a.format(corpus=corpus) for a in command] + ["--out", str(run)]
        main(args)
    bad = root / "bad"
    bad.mkdir()
    (bad / "a_file").write_text("not a folder\n")
    (bad / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (bad / "binary.txt").write_bytes(bytes(range(128, 256)) * 4)
    (bad / "empty.txt").write_text("")
    (bad / "blank.txt").write_text("\n  \n")
    # corpus folders
    for name in ("corpus_novalid", "corpus_latin1", "corpus_empty", "corpus_shortvalid", "corpus_shortlines"):
        _corpus(bad / name)
    (bad / "corpus_novalid" / "valid.txt").unlink()
    for split in ("train", "valid", "test"):
        (bad / "corpus_latin1" / f"{split}.txt").write_bytes("caf\xe9\n".encode("latin-1") * 50)
    (bad / "corpus_empty" / "train.txt").write_text("\n\n")
    (bad / "corpus_shortvalid" / "valid.txt").write_text("the cat\n")
    (bad / "corpus_shortvalid" / "test.txt").write_text("the cat\n")
    _corpus(bad / "corpus_shortlines", lines=200, words=2)  # no test sentence of more than 10 words
    _corpus(bad / "corpus_tiny")
    (bad / "corpus_tiny" / "train.txt").write_text("the cat sat\n")  # too short for batch x bptt
    (bad / "corpus_dir_as_split").mkdir()
    for split in ("train", "valid", "test"):
        (bad / "corpus_dir_as_split" / f"{split}.txt").mkdir()
    # configs
    (bad / "cfg_unknown.yaml").write_text("settings:\n  steps: 3\nbogus: 1\n")
    (bad / "cfg_badtype.yaml").write_text("settings:\n  steps: ten\n")
    (bad / "cfg_flat_settings.yaml").write_text("steps: 3\n")  # a setting given at the top: not a flag
    (bad / "cfg_settings_scalar.yaml").write_text("settings: 3\n")
    (bad / "settings_dim0.yaml").write_text("dim: 0\n")  # a --settings FILE: the keys of the settings
    (bad / "settings_unknown.yaml").write_text("dimm: 3\n")
    (bad / "settings_chunk.yaml").write_text("hidden: 10\nchunk: 4\n")
    (bad / "cfg_badyaml.yaml").write_text("steps: [3\n  dim: 4\n")
    (bad / "cfg_list.yaml").write_text("- 1\n- 2\n")
    (bad / "cfg_latin1.yaml").write_bytes("steps: 3 # caf\xe9\n".encode("latin-1"))
    # broken copies of the trained runs
    for base, name, breakage in (
        (lm, "lm_nojson", lambda r: (r / "model.json").unlink()),
        (lm, "lm_badjson", lambda r: (r / "model.json").write_text("{'dim': 16}")),
        (lm, "lm_listjson", lambda r: (r / "model.json").write_text("[16, 1]")),
        (lm, "lm_extrakey", lambda r: _edit_json(r / "model.json", lambda d: d.update(bogus=1))),
        (lm, "lm_missingkey", lambda r: _edit_json(r / "model.json", lambda d: d.pop("dim"))),
        (lm, "lm_zerodim", lambda r: _edit_json(r / "model.json", lambda d: d.update(dim=0))),
        (lm, "lm_strdim", lambda r: _edit_json(r / "model.json", lambda d: d.update(dim="sixteen"))),
        (lm, "lm_zeroheads", lambda r: _edit_json(r / "model.json", lambda d: d.update(heads=0))),
        (lm, "lm_novocab", lambda r: (r / "vocab.json").unlink()),
        (lm, "lm_badvocab", lambda r: (r / "vocab.json").write_text('{"words": ["a"]}')),
        (lm, "lm_vocabmismatch", lambda r: (r / "vocab.json").write_text('{"itos": ["a", "b"]}')),
        (
            lm,
            "lm_shorttransformer",
            lambda r: _edit_json(r / "model.json", lambda d: d.update(arch="transformer", max_len=8)),
        ),
        (lm, "lm_noweights", lambda r: (r / "model.safetensors").unlink()),
        (lm, "lm_badweights", lambda r: (r / "model.safetensors").write_bytes(b"\x00\xff" * 64)),
        (lm, "lm_noconfig", lambda r: (r / "config.yaml").unlink()),
        (lm, "lm_badconfig", lambda r: (r / "config.yaml").write_text("# kexue run config: lm-train\n: : [\n")),
        (
            lm,
            "lm_corruptstate",
            lambda r: [(c / "state.pt").write_bytes(bytes(range(256)) * 8) for c in (r / "checkpoints").glob("step-*")],
        ),
        (
            lm,
            "lm_corruptckpt",
            lambda r: [(c / "model.safetensors").write_bytes(b"junk" * 16) for c in (r / "checkpoints").glob("step-*")],
        ),
        (lm, "lm_nockpt", lambda r: shutil.rmtree(r / "checkpoints")),
        (lm, "lm_badresults", lambda r: (r / "results.json").write_text('{"lm.lstm_softmax.test_ppl": ')),
        (
            lm,
            "lm_strppl",
            lambda r: _edit_json(r / "results.json", lambda d: d["lm.lstm_softmax.test_ppl"].update(value="low")),
        ),
        (onl, "onl_badjson", lambda r: (r / "model.json").write_text("{'emb': 8")),
        (onl, "onl_extrakey", lambda r: _edit_json(r / "model.json", lambda d: d.update(bogus=1))),
        (onl, "onl_zerochunk", lambda r: _edit_json(r / "model.json", lambda d: d.update(chunk=0))),
        (onl, "onl_lstm", lambda r: _edit_json(r / "model.json", lambda d: d.update(cell="lstm"))),
        (
            onl,
            "onl_corruptstate",
            lambda r: [(c / "state.pt").write_bytes(bytes(range(256)) * 8) for c in (r / "checkpoints").glob("step-*")],
        ),
    ):
        shutil.copytree(base, bad / name)
        breakage(bad / name)
    vae = bad / "vae"
    vae.mkdir()
    (vae / "config.yaml").write_text("# kexue run config: vae-cluster-train\ndata: digits\n")
    (vae / "model.json").write_text(json.dumps({"backbone": "mlp", "latent": 10}))
    (vae / "model.safetensors").write_bytes(b"")
    # treebanks
    (bad / "tb_empty").mkdir()
    (bad / "tb_unbalanced").mkdir()
    (bad / "tb_unbalanced" / "wsj_0001.mrg").write_text("( (S (NP (DT the) (NN cat)) )\n")
    (bad / "tb_binary").mkdir()
    (bad / "tb_binary" / "wsj_0001.mrg").write_bytes(bytes(range(256)) * 4)
    (bad / "tb_punct").mkdir()
    (bad / "tb_punct" / "wsj_0001.mrg").write_text("( (S (. .) (, ,)) )\n")
    (bad / "tb_dir.mrg").mkdir()
    (bad / "tb_nested").mkdir()
    (bad / "tb_nested" / "wsj_0002.mrg").mkdir()
    (bad / "tb_ok").mkdir()
    (bad / "tb_ok" / "wsj_0001.mrg").write_text(MRG)
    return {"corpus": corpus, "lm": lm, "onl": onl, "bad": bad}


# (id, args, what the error line must contain)
CASES = [
    # ---- lm train: the bad inputs first found by hand ----
    ("lm-bptt-0", LM + ["--settings.bptt", "0"], "--settings.bptt"),
    ("lm-batch-0", LM + ["--settings.batch_size", "0"], "--settings.batch_size"),
    ("lm-config-steps-ten", LM + ["--config", "{bad}/cfg_badtype.yaml"], "steps"),
    ("lm-dim-0", LM + ["--settings.dim", "0"], "--settings.dim"),
    ("lm-dim-neg", LM + ["--settings.dim", "-8"], "--settings.dim"),
    ("lm-dropout-1.5", LM + ["--settings.dropout", "1.5"], "--settings.dropout"),
    ("lm-eval-every-neg", LM + ["--settings.eval_every", "-1"], "--settings.eval_every"),
    ("lm-eval-tokens-0", LM + ["--settings.eval_tokens", "0"], "--settings.eval_tokens"),
    ("lm-transformer-heads-0", LM + ["--settings.arch", "transformer", "--settings.heads", "0"], "--settings.heads"),
    ("lm-lr-neg", LM + ["--settings.lr", "-1"], "--settings.lr"),
    ("lm-max-vocab-0", LM + ["--settings.max_vocab", "0"], "--settings.max_vocab"),
    ("lm-out-file", LM + ["--out", "{bad}/a_file"], "a_file"),
    ("lm-out-proc", LM + ["--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("lm-threads-neg", LM + ["--threads", "-2"], "--threads"),
    ("lm-resume-latest-missing-nothing-left", LM + ["--resume", "--out", "{bad}/lm_nockpt"], "no checkpoint"),
    ("lm-resume-random-state", LM + ["--resume", "--out", "{bad}/lm_corruptstate"], "state.pt"),
    # ---- lm train: every constrained parameter ----
    ("lm-arch", LM + ["--settings.arch", "gru"], "--settings.arch"),
    ("lm-head", LM + ["--settings.head", "sigmoid"], "--settings.head"),
    ("lm-eps-0", LM + ["--settings.eps", "0"], "--settings.eps"),
    ("lm-eps-1", LM + ["--settings.eps", "1"], "--settings.eps"),
    ("lm-eps-word", LM + ["--settings.eps", "small"], "--settings.eps"),
    ("lm-dim-word", LM + ["--settings.dim", "ten"], "--settings.dim"),
    ("lm-dim-float", LM + ["--settings.dim", "1.5"], "--settings.dim"),
    ("lm-layers-0", LM + ["--settings.layers", "0"], "--settings.layers"),
    (
        "lm-dim-heads",
        LM + ["--settings.arch", "transformer", "--settings.dim", "10", "--settings.heads", "4"],
        "--settings.heads",
    ),
    ("lm-dropout-1", LM + ["--settings.dropout", "1"], "--settings.dropout"),
    ("lm-dropout-neg", LM + ["--settings.dropout", "-0.1"], "--settings.dropout"),
    ("lm-steps-0", LM + ["--settings.steps", "0"], "--settings.steps"),
    ("lm-bptt-neg", LM + ["--settings.bptt", "-5"], "--settings.bptt"),
    ("lm-lr-0", LM + ["--settings.lr", "0"], "--settings.lr"),
    ("lm-lr-word", LM + ["--settings.lr", "fast"], "--settings.lr"),
    ("lm-eval-tokens-small", LM + ["--settings.eval_tokens", "10"], "--settings.eval_tokens"),
    ("lm-max-vocab-neg", LM + ["--settings.max_vocab", "-3"], "--settings.max_vocab"),
    ("lm-seed-neg", LM + ["--settings.seed", "-1"], "--settings.seed"),
    ("lm-threads-0", LM + ["--threads", "0"], "--threads"),
    ("lm-unknown-flag", LM + ["--dimm", "3"], "dimm"),
    ("lm-setting-as-top-flag", LM + ["--dim", "3"], "--dim"),  # a setting is --settings.dim, not --dim
    ("lm-unknown-setting", LM + ["--settings.dimm", "3"], "dimm"),
    ("lm-resume-and-overwrite", LM + ["--resume", "--overwrite", "--out", "{lm}"], "--overwrite"),
    ("lm-resume-nothing", LM + ["--resume", "--out", "{out}"], "--resume"),
    ("lm-reuse-without-flags", LM + ["--out", "{lm}"], "--overwrite"),
    ("lm-overwrite-not-a-run", LM + ["--overwrite", "--out", "{bad}"], "not a kexue run folder"),
    ("lm-resume-other-command", ONL[:2] + ONL[2:] + ["--resume", "--out", "{lm}"], "lm-train"),
    ("lm-resume-changed-dim", LM + ["--settings.dim", "32", "--resume", "--out", "{lm}"], "dim"),
    ("lm-resume-corrupt-weights", LM + ["--resume", "--out", "{bad}/lm_corruptckpt"], "model.safetensors"),
    ("lm-out-under-file", LM + ["--out", "{bad}/a_file/sub"], "a_file"),
    # ---- lm train: sentence batching and early stopping ----
    ("lm-batching-choice", LM + ["--settings.batching", "words"], "--settings.batching"),
    ("lm-max-sentence-len-0", LM + ["--settings.max_sentence_len", "0"], "--settings.max_sentence_len"),
    ("lm-max-sentence-len-neg", LM + ["--settings.max_sentence_len", "-4"], "--settings.max_sentence_len"),
    ("lm-max-sentence-len-word", LM + ["--settings.max_sentence_len", "long"], "--settings.max_sentence_len"),
    ("lm-patience-neg", LM + ["--settings.patience", "-1"], "--settings.patience"),
    ("lm-length-pool-neg", LM + ["--settings.length_pool", "-1"], "--settings.length_pool"),
    ("lm-length-pool-word", LM + ["--settings.length_pool", "many"], "--settings.length_pool"),
    ("lm-resume-changed-length-pool", LM + ["--settings.length_pool", "4", "--resume", "--out", "{lm}"], "length_pool"),
    ("lm-patience-float", LM + ["--settings.patience", "1.5"], "--settings.patience"),
    (
        "lm-patience-without-evals",
        LM + ["--settings.patience", "2", "--settings.eval_every", "0"],
        "--settings.eval_every",
    ),
    (
        "lm-sentence-batch-too-big",
        LM + ["--settings.batching", "sentence", "--settings.batch_size", "500"],
        "120 sentences is too short",
    ),
    (
        "lm-sentence-short-valid",
        LM + ["--settings.batching", "sentence", "--corpus", "{bad}/corpus_shortvalid"],
        "valid split",
    ),
    (
        "lm-sentence-corpus-empty",
        LM + ["--settings.batching", "sentence", "--corpus", "{bad}/corpus_empty"],
        "no sentences",
    ),
    ("lm-resume-changed-batching", LM + ["--settings.batching", "sentence", "--resume", "--out", "{lm}"], "batching"),
    (
        "lm-resume-patience-on-a-run-without-it",
        LM + ["--settings.eval_every", "2", "--settings.patience", "2", "--resume", "--out", "{lm}"],
        "without early stopping",
    ),
    (
        "lm-resume-changed-max-sentence-len",
        LM + ["--settings.max_sentence_len", "40", "--resume", "--out", "{lm}"],
        "max_sentence_len",
    ),
    # ---- lm train: corpus folders ----
    ("lm-corpus-missing", LM + ["--corpus", "{bad}/nope"], "nope"),
    ("lm-corpus-file", LM + ["--corpus", "{bad}/a_file"], "not a folder"),
    ("lm-corpus-no-valid", LM + ["--corpus", "{bad}/corpus_novalid"], "valid.txt"),
    ("lm-corpus-latin1", LM + ["--corpus", "{bad}/corpus_latin1"], "not UTF-8"),
    ("lm-corpus-empty", LM + ["--corpus", "{bad}/corpus_empty"], "no sentences"),
    ("lm-corpus-short-valid", LM + ["--corpus", "{bad}/corpus_shortvalid"], "valid split"),
    ("lm-corpus-too-short", LM + ["--corpus", "{bad}/corpus_tiny"], "too short"),
    ("lm-corpus-split-is-dir", LM + ["--corpus", "{bad}/corpus_dir_as_split"], "folder"),
    ("lm-bptt-too-long", LM + ["--settings.bptt", "5000"], "too short"),
    # ---- lm train: --config files ----
    ("lm-config-unknown-key", LM + ["--config", "{bad}/cfg_unknown.yaml"], "bogus"),
    ("lm-config-malformed", LM + ["--config", "{bad}/cfg_badyaml.yaml"], "cfg_badyaml.yaml"),
    ("lm-config-list", LM + ["--config", "{bad}/cfg_list.yaml"], "cfg_list.yaml"),
    ("lm-config-latin1", LM + ["--config", "{bad}/cfg_latin1.yaml"], "cfg_latin1.yaml"),
    ("lm-config-missing", LM + ["--config", "{bad}/nope.yaml"], "nope.yaml"),
    ("lm-config-folder", LM + ["--config", "{bad}"], "folder"),
    ("lm-config-flat-setting", LM + ["--config", "{bad}/cfg_flat_settings.yaml"], "steps"),
    ("lm-config-settings-scalar", LM + ["--config", "{bad}/cfg_settings_scalar.yaml"], "settings"),
    # ---- lm train: --settings FILE ----
    ("lm-settings-file-bad-value", LM + ["--settings", "{bad}/settings_dim0.yaml"], "--settings.dim"),
    ("lm-settings-file-unknown", LM + ["--settings", "{bad}/settings_unknown.yaml"], "dimm"),
    ("lm-settings-file-missing", LM + ["--settings", "{bad}/nope.yaml"], "nope.yaml"),
    ("lm-settings-file-folder", LM + ["--settings", "{bad}"], "folder"),
    ("lm-settings-inline-scalar", LM + ["--settings", "3"], "--settings"),
    # ---- lm generate ----
    ("gen-badjson", GEN[:2] + ["--run", "{bad}/lm_badjson"] + GEN[4:], "model.json"),
    ("gen-extrakey", GEN[:2] + ["--run", "{bad}/lm_extrakey"] + GEN[4:], "bogus"),
    ("gen-vae-run", GEN[:2] + ["--run", "{bad}/vae"] + GEN[4:], "vae-cluster-train"),
    ("gen-onlstm-run", GEN[:2] + ["--run", "{onl}"] + GEN[4:], "onlstm-train"),
    ("gen-run-missing", GEN[:2] + ["--run", "{bad}/nope"] + GEN[4:], "not found"),
    ("gen-run-file", GEN[:2] + ["--run", "{bad}/a_file"] + GEN[4:], "not a folder"),
    ("gen-not-a-run", GEN[:2] + ["--run", "{corpus}"] + GEN[4:], "config.yaml"),
    ("gen-nojson", GEN[:2] + ["--run", "{bad}/lm_nojson"] + GEN[4:], "model.json"),
    ("gen-listjson", GEN[:2] + ["--run", "{bad}/lm_listjson"] + GEN[4:], "model.json"),
    ("gen-missingkey", GEN[:2] + ["--run", "{bad}/lm_missingkey"] + GEN[4:], "missing key(s) dim"),
    ("gen-zerodim", GEN[:2] + ["--run", "{bad}/lm_zerodim"] + GEN[4:], "dim"),
    ("gen-strdim", GEN[:2] + ["--run", "{bad}/lm_strdim"] + GEN[4:], "dim"),
    ("gen-zeroheads", GEN[:2] + ["--run", "{bad}/lm_zeroheads"] + GEN[4:], "heads"),
    ("gen-novocab", GEN[:2] + ["--run", "{bad}/lm_novocab"] + GEN[4:], "vocab.json"),
    ("gen-badvocab", GEN[:2] + ["--run", "{bad}/lm_badvocab"] + GEN[4:], "vocab.json"),
    ("gen-vocab-mismatch", GEN[:2] + ["--run", "{bad}/lm_vocabmismatch"] + GEN[4:], "vocab.json"),
    ("gen-noweights", GEN[:2] + ["--run", "{bad}/lm_noweights"] + GEN[4:], "model.safetensors"),
    ("gen-badweights", GEN[:2] + ["--run", "{bad}/lm_badweights"] + GEN[4:], "model.safetensors"),
    ("gen-noconfig", GEN[:2] + ["--run", "{bad}/lm_noconfig"] + GEN[4:], "config.yaml"),
    ("gen-badconfig", GEN[:2] + ["--run", "{bad}/lm_badconfig"] + GEN[4:], "config.yaml"),
    ("gen-decoder", GEN + ["--decoder", "nucleus"], "--decoder"),
    ("gen-max-new-0", GEN + ["--max_new_tokens", "0"], "--max_new_tokens"),
    ("gen-samples-0", GEN + ["--samples", "0"], "--samples"),
    ("gen-seed-neg", GEN + ["--seed", "-1"], "--seed"),
    ("gen-no-prompt", ["lm", "generate", "--run", "{lm}"], "prompt"),
    (
        "gen-past-max-len",
        GEN[:2] + ["--run", "{bad}/lm_shorttransformer"] + GEN[4:] + ["--max_new_tokens", "20"],
        "--max_new_tokens",
    ),
    # ---- lm termination: findings, then every parameter and the run folders ----
    ("term-chunk-0", TERM + ["--chunk", "0", "--out", "{out}"], "--chunk"),
    ("term-cap-0", TERM + ["--cap", "0", "--out", "{out}"], "--cap"),
    ("term-cap-neg", TERM + ["--cap", "-5", "--out", "{out}"], "--cap"),
    ("term-prefixes-0", TERM + ["--prefixes", "0", "--out", "{out}"], "--prefixes"),
    ("term-seed-neg", TERM + ["--seed", "-1", "--out", "{out}"], "--seed"),
    ("term-threads-0", TERM + ["--threads", "0", "--out", "{out}"], "--threads"),
    ("term-decoder-unknown", TERM + ["--decoders", "greedy,nucleus", "--out", "{out}"], "nucleus"),
    ("term-decoder-empty", TERM + ["--decoders", ",", "--out", "{out}"], "--decoders"),
    ("term-decoder-twice", TERM + ["--decoders", "greedy,greedy", "--out", "{out}"], "twice"),
    ("term-models-nonsense", TERM + ["--models", "nonsense", "--out", "{out}"], "--models"),
    ("term-models-no-run", TERM + ["--models", "a=", "--out", "{out}"], "--models"),
    ("term-models-no-name", TERM + ["--models", "={lm}", "--out", "{out}"], "--models"),
    ("term-models-bad-name", TERM + ["--models", "a.b={lm}", "--out", "{out}"], "a.b"),
    ("term-models-twice", TERM + ["--models", "a={lm},a={lm}", "--out", "{out}"], "twice"),
    ("term-models-missing", TERM + ["--models", "a={lm},b={bad}/nope", "--out", "{out}"], "nope"),
    ("term-models-vae", TERM + ["--models", "a={lm},b={bad}/vae", "--out", "{out}"], "vae-cluster-train"),
    ("term-models-onlstm", TERM + ["--models", "a={onl}", "--out", "{out}"], "onlstm-train"),
    ("term-models-badjson", TERM + ["--models", "a={lm},b={bad}/lm_badjson", "--out", "{out}"], "model.json"),
    ("term-models-extrakey", TERM + ["--models", "a={bad}/lm_extrakey", "--out", "{out}"], "bogus"),
    ("term-cap-past-max-len", TERM + ["--models", "a={bad}/lm_shorttransformer", "--out", "{out}"], "--cap"),
    ("term-corpus-missing", TERM + ["--corpus", "{bad}/nope", "--out", "{out}"], "nope"),
    ("term-corpus-short-lines", TERM + ["--corpus", "{bad}/corpus_shortlines", "--out", "{out}"], "10 words"),
    ("term-corpus-latin1", TERM + ["--corpus", "{bad}/corpus_latin1", "--out", "{out}"], "not UTF-8"),
    ("term-results-folder", TERM + ["--results", "{bad}", "--out", "{out}"], "--results"),
    ("term-results-proc", TERM + ["--results", "/proc/kexue_probe/r.json", "--out", "{out}"], "--results"),
    ("term-out-file", TERM + ["--out", "{bad}/a_file"], "a_file"),
    ("term-out-proc", TERM + ["--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("term-out-not-empty", TERM + ["--out", "{lm}"], "--overwrite"),
    # ---- lm termination: the paper's decoders, prefixes and the runs' test perplexity (issue 16) ----
    ("term-decoder-top3", TERM + ["--decoders", "greedy,topk3", "--out", "{out}"], "topk3"),
    ("term-decoder-paper-name", TERM + ["--decoders", "nucleus-0.4", "--out", "{out}"], "nucleus-0.4"),
    ("term-decoder-st-greedy", TERM + ["--decoders", "st_greedy", "--out", "{out}"], "st_greedy"),
    ("term-prefixes-more-than-test", TERM + ["--prefixes", "1000", "--out", "{out}"], "only 120 sentences"),
    ("term-prefixes-float", TERM + ["--prefixes", "1.5", "--out", "{out}"], "--prefixes"),
    ("term-cap-word", TERM + ["--cap", "long", "--out", "{out}"], "--cap"),
    ("term-results-json-broken", TERM + ["--models", "a={bad}/lm_badresults", "--out", "{out}"], "results.json"),
    ("term-results-ppl-string", TERM + ["--models", "a={bad}/lm_strppl", "--out", "{out}"], "test perplexity"),
    # ---- onlstm train: findings ----
    ("onl-bptt-0", ONL + ["--settings.bptt", "0"], "--settings.bptt"),
    ("onl-batch-0", ONL + ["--settings.batch_size", "0"], "--settings.batch_size"),
    ("onl-chunk-0", ONL + ["--settings.chunk", "0"], "--settings.chunk"),
    ("onl-dropout-2", ONL + ["--settings.dropout", "2"], "--settings.dropout"),
    ("onl-lr-neg", ONL + ["--settings.lr", "-1"], "--settings.lr"),
    # ---- onlstm train: every constrained parameter ----
    ("onl-cell", ONL + ["--settings.cell", "gru"], "--settings.cell"),
    ("onl-master-input", ONL + ["--settings.master_input", "cumsum"], "--settings.master_input"),
    ("onl-emb-0", ONL + ["--settings.emb", "0"], "--settings.emb"),
    ("onl-hidden-neg", ONL + ["--settings.hidden", "-8"], "--settings.hidden"),
    ("onl-layers-0", ONL + ["--settings.layers", "0"], "--settings.layers"),
    ("onl-hidden-chunk", ONL + ["--settings.hidden", "10"], "--settings.chunk"),
    ("onl-emb-chunk", ONL + ["--settings.emb", "6"], "--settings.chunk"),
    ("onl-dropouth-1", ONL + ["--settings.dropouth", "1"], "--settings.dropouth"),
    ("onl-dropouti-neg", ONL + ["--settings.dropouti", "-0.1"], "--settings.dropouti"),
    ("onl-dropoute-1.5", ONL + ["--settings.dropoute", "1.5"], "--settings.dropoute"),
    ("onl-wdrop-1", ONL + ["--settings.wdrop", "1"], "--settings.wdrop"),
    ("onl-alpha-neg", ONL + ["--settings.alpha", "-1"], "--settings.alpha"),
    ("onl-beta-neg", ONL + ["--settings.beta", "-0.5"], "--settings.beta"),
    ("onl-steps-0", ONL + ["--settings.steps", "0"], "--settings.steps"),
    ("onl-lr-0", ONL + ["--settings.lr", "0"], "--settings.lr"),
    ("onl-weight-decay-neg", ONL + ["--settings.weight_decay", "-0.5"], "--settings.weight_decay"),
    ("onl-clip-neg", ONL + ["--settings.clip", "-1"], "--settings.clip"),
    ("onl-seed-neg", ONL + ["--settings.seed", "-3"], "--settings.seed"),
    (
        "onl-grammar-sentences-0",
        ONL + ["--corpus", "grammar", "--settings.grammar_sentences", "0"],
        "--settings.grammar_sentences",
    ),
    ("onl-eval-every-neg", ONL + ["--settings.eval_every", "-1"], "--settings.eval_every"),
    ("onl-ckpt-every-neg", ONL + ["--settings.ckpt_every", "-1"], "--settings.ckpt_every"),
    ("onl-max-valid-0", ONL + ["--settings.max_valid_tokens", "0"], "--settings.max_valid_tokens"),
    ("onl-max-valid-small", ONL + ["--settings.max_valid_tokens", "5"], "--settings.max_valid_tokens"),
    ("onl-threads-0", ONL + ["--threads", "0"], "--threads"),
    ("onl-threads-neg", ONL + ["--threads", "-2"], "--threads"),
    ("onl-emb-word", ONL + ["--settings.emb", "eight"], "--settings.emb"),
    ("onl-results-folder", ONL + ["--results", "{bad}"], "--results"),
    ("onl-results-proc", ONL + ["--results", "/proc/kexue_probe/r.json"], "--results"),
    ("onl-out-file", ONL + ["--out", "{bad}/a_file"], "a_file"),
    ("onl-out-proc", ONL + ["--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("onl-out-devnull", ONL + ["--out", "/dev/null"], "/dev/null"),
    ("onl-reuse-without-flags", ONL + ["--out", "{onl}"], "--overwrite"),
    ("onl-resume-random-state", ONL + ["--resume", "--out", "{bad}/onl_corruptstate"], "state.pt"),
    ("onl-resume-other-command", ONL + ["--resume", "--out", "{lm}"], "lm-train"),
    ("onl-resume-changed-hidden", ONL + ["--settings.hidden", "16", "--resume", "--out", "{onl}"], "hidden"),
    ("onl-corpus-missing", ONL + ["--corpus", "{bad}/nope"], "nope"),
    ("onl-corpus-latin1", ONL + ["--corpus", "{bad}/corpus_latin1"], "not UTF-8"),
    ("onl-corpus-empty", ONL + ["--corpus", "{bad}/corpus_empty"], "no sentences"),
    ("onl-corpus-no-valid", ONL + ["--corpus", "{bad}/corpus_novalid"], "valid.txt"),
    ("onl-corpus-short-test", ONL + ["--corpus", "{bad}/corpus_shortvalid"], "split"),
    ("onl-config-unknown-key", ONL + ["--config", "{bad}/cfg_unknown.yaml"], "bogus"),
    ("onl-config-steps-ten", ONL + ["--config", "{bad}/cfg_badtype.yaml"], "steps"),
    ("onl-setting-as-top-flag", ONL + ["--hidden", "16"], "--hidden"),
    ("onl-settings-file-chunk", ONL + ["--settings", "{bad}/settings_chunk.yaml"], "--settings.chunk"),
    ("onl-settings-file-unknown", ONL + ["--settings", "{bad}/settings_unknown.yaml"], "dimm"),
    # ---- onlstm parse ----
    ("parse-draw-out-proc", PARSE + ["--draw", "--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("parse-out-file", PARSE + ["--out", "{bad}/a_file"], "a_file"),
    ("parse-out-not-empty", PARSE + ["--out", "{bad}"], "--overwrite"),
    ("parse-input-binary", PARSE[:4] + ["--input", "{bad}/binary.txt"], "not UTF-8"),
    ("parse-input-latin1", PARSE[:4] + ["--input", "{bad}/latin1.txt"], "not UTF-8"),
    ("parse-input-missing", PARSE[:4] + ["--input", "{bad}/nope.txt"], "not found"),
    ("parse-input-folder", PARSE[:4] + ["--input", "{bad}"], "folder"),
    ("parse-input-empty", PARSE[:4] + ["--input", "{bad}/blank.txt"], "no sentences"),
    ("parse-no-sentences", PARSE[:4], "--sentences"),
    ("parse-model-badjson", ["onlstm", "parse", "--model", "{bad}/onl_badjson"] + PARSE[4:], "model.json"),
    ("parse-model-extrakey", ["onlstm", "parse", "--model", "{bad}/onl_extrakey"] + PARSE[4:], "bogus"),
    ("parse-model-zerochunk", ["onlstm", "parse", "--model", "{bad}/onl_zerochunk"] + PARSE[4:], "chunk"),
    ("parse-model-lstm", ["onlstm", "parse", "--model", "{bad}/onl_lstm"] + PARSE[4:], "ON-LSTM"),
    ("parse-model-lm-run", ["onlstm", "parse", "--model", "{lm}"] + PARSE[4:], "lm-train"),
    ("parse-model-vae-run", ["onlstm", "parse", "--model", "{bad}/vae"] + PARSE[4:], "vae-cluster-train"),
    ("parse-model-missing", ["onlstm", "parse", "--model", "{bad}/nope"] + PARSE[4:], "not found"),
    ("parse-layer-too-deep", PARSE + ["--layer", "5"], "--layer"),
    ("parse-layer-too-negative", PARSE + ["--layer", "-3"], "--layer"),
    ("parse-layer-word", PARSE + ["--layer", "top"], "--layer"),
    # ---- onlstm eval ----
    ("eval-model-badjson", ["onlstm", "eval", "--model", "{bad}/onl_badjson", "--grammar", "10"], "model.json"),
    ("eval-model-lm-run", ["onlstm", "eval", "--model", "{lm}", "--grammar", "10"], "lm-train"),
    ("eval-model-lstm", ["onlstm", "eval", "--model", "{bad}/onl_lstm", "--grammar", "10"], "ON-LSTM"),
    ("eval-nothing", EVAL + ["--out", "{out}"], "exactly one"),
    ("eval-two", EVAL + ["--grammar", "10", "--treebank", "{bad}/tb_ok", "--out", "{out}"], "exactly one"),
    ("eval-grammar-0", EVAL + ["--grammar", "0", "--out", "{out}"], "--grammar"),
    ("eval-grammar-seed-neg", EVAL + ["--grammar", "5", "--grammar_seed", "-1", "--out", "{out}"], "--grammar_seed"),
    ("eval-max-sentences-0", EVAL + ["--grammar", "5", "--max_sentences", "0", "--out", "{out}"], "--max_sentences"),
    ("eval-treebank-missing", EVAL + ["--treebank", "{bad}/nope", "--out", "{out}"], "nope"),
    ("eval-treebank-empty", EVAL + ["--treebank", "{bad}/tb_empty", "--out", "{out}"], ".mrg"),
    ("eval-treebank-unbalanced", EVAL + ["--treebank", "{bad}/tb_unbalanced", "--out", "{out}"], "wsj_0001.mrg"),
    ("eval-treebank-binary", EVAL + ["--treebank", "{bad}/tb_binary", "--out", "{out}"], "wsj_0001.mrg"),
    ("eval-treebank-punct-only", EVAL + ["--treebank", "{bad}/tb_punct", "--out", "{out}"], "no sentence"),
    ("eval-treebank-mrg-folder", EVAL + ["--treebank", "{bad}/tb_nested", "--out", "{out}"], "wsj_0002.mrg"),
    ("eval-corpus-missing", EVAL + ["--corpus", "{bad}/nope", "--out", "{out}"], "nope"),
    ("eval-corpus-short", EVAL + ["--corpus", "{bad}/corpus_shortvalid", "--out", "{out}"], "test split"),
    ("eval-results-folder", EVAL + ["--grammar", "5", "--results", "{bad}", "--out", "{out}"], "--results"),
    ("eval-out-file", EVAL + ["--grammar", "5", "--out", "{bad}/a_file"], "a_file"),
    ("eval-out-proc", EVAL + ["--grammar", "5", "--out", "/proc/kexue_probe"], "/proc/kexue_probe"),
    ("eval-out-not-empty", EVAL + ["--grammar", "5", "--out", "{onl}"], "--overwrite"),
]


@pytest.mark.parametrize("args,match", [pytest.param(a, m, id=i) for i, a, m in CASES])
def test_bad_input_is_one_line(paths, tmp_path, cli_error, args, match, monkeypatch):
    out = tmp_path / "out"
    values = {**paths, "out": out}
    runs = {name: _listing(paths[name]) for name in ("lm", "onl")}
    forwards = []
    real_call = torch.nn.Module.__call__

    def counting(self, *a, **kw):  # every model forward goes through here
        forwards.append(type(self).__name__)
        return real_call(self, *a, **kw)

    monkeypatch.setattr(torch.nn.Module, "__call__", counting)
    cli_error([a.format(**values) for a in args], out=out, match=match.format(**values))
    assert forwards == [], f"bad input must fail before any work; ran {sorted(set(forwards))}"
    assert {name: _listing(paths[name]) for name in runs} == runs, "a trained run was changed"


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_every_row_id_is_unique():
    ids = [i for i, _, _ in CASES]
    assert len(ids) == len(set(ids))
