"""Bad input to `kexue simbert train / similar / index / retrieve / eval`: one error line, exit 2, nothing left behind.

Placeholders: {bert} a tiny BERT folder, {run} a tiny trained simbert run, {pairs} good pairs,
{corpus} a good sentence file, {index} an index of {corpus} built with {run}, {bad} broken files and
folders, {out} a fresh output path.
"""

import json
import shutil

import pytest
from test_unilm import save_tiny_bert

from kexue.cli import GROUPS, main

TRAIN = ["simbert", "train", "--model", "{bert}", "--pairs", "{pairs}", "--settings.steps", "2",
         "--settings.batch_pairs", "2", "--settings.eval_pairs", "4"]  # fmt: skip
SIMILAR = ["simbert", "similar", "--model", "{run}", "--text", "the cat", "--candidates", "2", "--max_len", "4"]
RETRIEVE = ["simbert", "retrieve", "--model", "{run}", "--corpus", "{corpus}", "--query", "the cat"]
EVAL = ["simbert", "eval", "--model", "{run}", "--base", "{bert}", "--pairs", "{pairs}"]
INDEX = ["simbert", "index", "--model", "{run}", "--corpus", "{corpus}"]
FROM_INDEX = ["simbert", "retrieve", "--index", "{index}", "--query", "the cat"]
INDEX_COMMAND = "kexue.commands.simbert:index"


@pytest.fixture(autouse=True)
def _index_command(monkeypatch):
    """`kexue simbert index` in the CLI registry (a no-op once kexue.cli.GROUPS lists it)."""
    monkeypatch.setitem(GROUPS["simbert"][1], "index", INDEX_COMMAND)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input-simbert")
    bert = save_tiny_bert(root / "bert")
    pairs = root / "pairs.tsv"
    pairs.write_text("the cat sat\ta cat sat\nthe dog ran\ta dog ran\nbig house\tred house\nsmall tree\tblue tree\n")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat\na dog ran\n")
    run = root / "run"
    main([a.format(bert=bert, pairs=pairs) for a in TRAIN] + ["--out", str(run)])
    bad = root / "bad"
    bad.mkdir()
    (bad / "a_file").write_text("x\n")
    (bad / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (bad / "empty.txt").write_text("")
    (bad / "blank.txt").write_text("\n  \n")
    (bad / "notab.tsv").write_text("the cat sat\n")
    (bad / "fourfields.tsv").write_text("a\tb\tc\td\n")
    (bad / "badjson.jsonl").write_text('{"source": "a", "target": \n')
    (bad / "unknownkey.jsonl").write_text('{"source": "a", "target": "b", "label": 1}\n')
    (bad / "pairs.csv").write_text("a,b\n")
    (bad / "one.tsv").write_text("the cat\ta cat\n")
    (bad / "latin1.tsv").write_bytes("caf\xe9\tthe cat\n".encode("latin-1"))
    (bad / "noconfig").mkdir()
    (bad / "gpt2").mkdir()
    (bad / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (bad / "brokenconfig").mkdir()
    (bad / "brokenconfig" / "config.json").write_text("{not json")
    for name, breakage in (
        ("run_nojson", lambda r: (r / "model.json").unlink()),
        ("run_extrakey", lambda r: (r / "model.json").write_text('{"pooling": "mean", "bogus": 1}')),
        ("run_badpooling", lambda r: (r / "model.json").write_text('{"pooling": "max"}')),
        ("run_badweights", lambda r: (r / "model.safetensors").write_bytes(b"\x00\xff" * 64)),
        ("run_noweights", lambda r: (r / "model.safetensors").unlink()),
        ("run_nockpt", lambda r: shutil.rmtree(r / "checkpoints")),
    ):
        shutil.copytree(run, bad / name)
        breakage(bad / name)
    GROUPS["simbert"][1].setdefault("index", INDEX_COMMAND)
    index = root / "index"
    main([a.format(run=run, corpus=corpus) for a in INDEX] + ["--backend", "faiss" if _has_faiss() else "exact",
         "--out", str(index)])  # fmt: skip
    for name, breakage in (
        ("index_nojson", lambda i: (i / "index.json").unlink()),
        ("index_badjson", lambda i: (i / "index.json").write_text('{"model": ')),
        ("index_list", lambda i: (i / "index.json").write_text("[]")),
        ("index_missingkey", lambda i: _edit_json(i / "index.json", lambda m: m.pop("fingerprint"))),
        ("index_extrakey", lambda i: _edit_json(i / "index.json", lambda m: m.update(bogus=1))),
        ("index_badtype", lambda i: _edit_json(i / "index.json", lambda m: m.update(n="five"))),
        ("index_wrong_n", lambda i: _edit_json(i / "index.json", lambda m: m.update(n=7))),
        ("index_gone_model", lambda i: _edit_json(i / "index.json", lambda m: m.update(model=str(root / "gone")))),
        ("index_novectors", lambda i: (i / "vectors.safetensors").unlink()),
        ("index_badvectors", lambda i: (i / "vectors.safetensors").write_bytes(b"\x00\xff" * 64)),
        ("index_nosentences", lambda i: (i / "sentences.txt").unlink()),
        ("index_fewsentences", lambda i: (i / "sentences.txt").write_text("the cat sat\n")),
        ("index_latin1sentences", lambda i: (i / "sentences.txt").write_bytes("caf\xe9\nx\n".encode("latin-1"))),
    ):
        shutil.copytree(index, bad / name)
        breakage(bad / name)
    if _has_faiss():
        shutil.copytree(index, bad / "index_badfaiss")
        (bad / "index_badfaiss" / "faiss.index").write_bytes(b"\x00" * 40)
    vae = bad / "vae"
    vae.mkdir()
    (vae / "config.yaml").write_text("# kexue run config: vae-cluster-train\ndata: digits\n")
    (vae / "model.json").write_text("{}")
    (vae / "model.safetensors").write_bytes(b"")
    return {"bert": bert, "run": run, "pairs": pairs, "corpus": corpus, "bad": bad, "index": index}


def _has_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _with(base, flag, value):
    args = list(base)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


ROWS = [
    # train: constrained settings
    ("train steps 0", _with(TRAIN, "--settings.steps", "0"), "--settings.steps"),
    ("train steps negative", _with(TRAIN, "--settings.steps", "-3"), "--settings.steps"),
    ("train steps text", _with(TRAIN, "--settings.steps", "ten"), "--settings.steps"),
    ("train batch 0", _with(TRAIN, "--settings.batch_pairs", "0"), "--settings.batch_pairs"),
    ("train max_len 0", _with(TRAIN, "--settings.max_len", "0"), "--settings.max_len"),
    ("train lr 0", _with(TRAIN, "--settings.lr", "0"), "--settings.lr"),
    ("train lr negative", _with(TRAIN, "--settings.lr", "-1e-4"), "--settings.lr"),
    ("train weight decay negative", _with(TRAIN, "--settings.weight_decay", "-0.1"), "--settings.weight_decay"),
    ("train eval_every negative", _with(TRAIN, "--settings.eval_every", "-1"), "--settings.eval_every"),
    ("train pooling choice", _with(TRAIN, "--settings.pooling", "max"), "--settings.pooling"),
    ("train seed negative", _with(TRAIN, "--settings.seed", "-1"), "--settings.seed"),
    (
        "train max_pairs < batch",
        _with(_with(TRAIN, "--settings.max_pairs", "1"), "--settings.batch_pairs", "2"),
        "max_pairs",
    ),
    ("train threads 0", _with(TRAIN, "--threads", "0"), "--threads"),
    ("train more pairs per batch than pairs", _with(TRAIN, "--settings.batch_pairs", "50"), "batch_pairs"),
    # train: files and folders
    ("train pairs missing", _with(TRAIN, "--pairs", "{bad}/nope.tsv"), "nope.tsv"),
    ("train pairs folder", _with(TRAIN, "--pairs", "{bad}"), "pairs"),
    ("train pairs latin1", _with(TRAIN, "--pairs", "{bad}/latin1.tsv"), "line 1"),
    ("train pairs empty", _with(TRAIN, "--pairs", "{bad}/empty.txt"), "no pairs"),
    ("train pairs no tab", _with(TRAIN, "--pairs", "{bad}/notab.tsv"), "line 1"),
    ("train pairs four fields", _with(TRAIN, "--pairs", "{bad}/fourfields.tsv"), "line 1"),
    ("train pairs bad json", _with(TRAIN, "--pairs", "{bad}/badjson.jsonl"), "line 1"),
    ("train pairs unknown key", _with(TRAIN, "--pairs", "{bad}/unknownkey.jsonl"), "label"),
    ("train pairs csv", _with(TRAIN, "--pairs", "{bad}/pairs.csv"), ".tsv"),
    ("train model missing", _with(TRAIN, "--model", "{bad}/nope"), "not found"),
    ("train model a file", _with(TRAIN, "--model", "{bad}/a_file"), "not a folder"),
    ("train model no config", _with(TRAIN, "--model", "{bad}/noconfig"), "config.json"),
    ("train model gpt2", _with(TRAIN, "--model", "{bad}/gpt2"), "gpt2"),
    ("train model broken config", _with(TRAIN, "--model", "{bad}/brokenconfig"), "config.json"),
    ("train model a simbert run", _with(TRAIN, "--model", "{run}"), "not a simbert run"),
    ("train model a vae run", _with(TRAIN, "--model", "{bad}/vae"), "vae-cluster-train"),
    ("train out a file", TRAIN + ["--out", "{bad}/a_file"], "--out"),
    ("train out used", TRAIN + ["--out", "{run}"], "--overwrite"),
    ("train resume no checkpoint", TRAIN + ["--out", "{bad}/run_nockpt", "--resume"], "checkpoint"),
    # similar
    ("similar candidates 0", _with(SIMILAR, "--candidates", "0"), "--candidates"),
    ("similar top 0", _with(SIMILAR, "--top", "0"), "--top"),
    ("similar top_p 0", _with(SIMILAR, "--top_p", "0"), "--top_p"),
    ("similar top_p 1.5", _with(SIMILAR, "--top_p", "1.5"), "--top_p"),
    ("similar top_k 0", _with(SIMILAR, "--top_k", "0"), "--top_k"),
    ("similar temperature 0", _with(SIMILAR, "--temperature", "0"), "--temperature"),
    ("similar seed negative", _with(SIMILAR, "--seed", "-1"), "--seed"),
    ("similar max_len text", _with(SIMILAR, "--max_len", "x"), "--max_len"),
    ("similar empty text", _with(SIMILAR, "--text", " "), "--text"),
    ("similar no text", [a for a in SIMILAR if a not in ("--text", "the cat")], "--text"),
    ("similar text and texts", SIMILAR + ["--texts", "{corpus}"], "--texts"),
    ("similar texts latin1", [*SIMILAR[:4], "--texts", "{bad}/latin1.txt"], "latin1.txt"),
    ("similar texts blank", [*SIMILAR[:4], "--texts", "{bad}/blank.txt"], "no sentences"),
    ("similar model vae run", _with(SIMILAR, "--model", "{bad}/vae"), "vae-cluster-train"),
    ("similar run without model.json", _with(SIMILAR, "--model", "{bad}/run_nojson"), "model.json"),
    ("similar run extra key", _with(SIMILAR, "--model", "{bad}/run_extrakey"), "bogus"),
    ("similar run bad pooling", _with(SIMILAR, "--model", "{bad}/run_badpooling"), "pooling"),
    ("similar run corrupt weights", _with(SIMILAR, "--model", "{bad}/run_badweights"), "model.safetensors"),
    ("similar run without weights", _with(SIMILAR, "--model", "{bad}/run_noweights"), "model.safetensors"),
    # retrieve
    ("retrieve corpus missing", _with(RETRIEVE, "--corpus", "{bad}/nope.txt"), "nope.txt"),
    ("retrieve corpus folder", _with(RETRIEVE, "--corpus", "{bad}"), "corpus"),
    ("retrieve corpus latin1", _with(RETRIEVE, "--corpus", "{bad}/latin1.txt"), "latin1.txt"),
    ("retrieve corpus empty", _with(RETRIEVE, "--corpus", "{bad}/empty.txt"), "no sentences"),
    ("retrieve top 0", _with(RETRIEVE, "--top", "0"), "--top"),
    ("retrieve backend choice", _with(RETRIEVE, "--backend", "annoy"), "--backend"),
    ("retrieve no query", RETRIEVE[:6], "--query"),
    ("retrieve model missing", _with(RETRIEVE, "--model", "{bad}/nope"), "not found"),
    ("retrieve max_len 0", _with(RETRIEVE, "--max_len", "0"), "--max_len"),
    # index
    ("index corpus missing", _with(INDEX, "--corpus", "{bad}/nope.txt"), "nope.txt"),
    ("index corpus folder", _with(INDEX, "--corpus", "{bad}"), "corpus"),
    ("index corpus latin1", _with(INDEX, "--corpus", "{bad}/latin1.txt"), "latin1.txt"),
    ("index corpus empty", _with(INDEX, "--corpus", "{bad}/blank.txt"), "no sentences"),
    ("index no corpus", INDEX[:4], "--corpus"),
    ("index backend choice", _with(INDEX, "--backend", "annoy"), "--backend"),
    ("index max_len 0", _with(INDEX, "--max_len", "0"), "--max_len"),
    ("index max_len text", _with(INDEX, "--max_len", "long"), "--max_len"),
    ("index threads 0", _with(INDEX, "--threads", "0"), "--threads"),
    ("index model missing", _with(INDEX, "--model", "{bad}/nope"), "not found"),
    ("index model no config", _with(INDEX, "--model", "{bad}/noconfig"), "config.json"),
    ("index model vae run", _with(INDEX, "--model", "{bad}/vae"), "vae-cluster-train"),
    ("index model corrupt weights", _with(INDEX, "--model", "{bad}/run_badweights"), "model.safetensors"),
    ("index model without weights", _with(INDEX, "--model", "{bad}/run_noweights"), "model.safetensors"),
    ("index out a file", INDEX + ["--out", "{bad}/a_file"], "--out"),
    ("index out used", INDEX + ["--out", "{index}"], "--overwrite"),
    ("index out a non-run folder", INDEX + ["--out", "{bad}", "--overwrite"], "not a kexue run folder"),
    # retrieve --index
    ("retrieve index and corpus", FROM_INDEX + ["--corpus", "{corpus}"], "one of them"),
    ("retrieve neither index nor corpus", ["simbert", "retrieve", "--query", "the cat"], "--index"),
    ("retrieve index missing", _with(FROM_INDEX, "--index", "{bad}/nope"), "not found"),
    ("retrieve index a file", _with(FROM_INDEX, "--index", "{bad}/a_file"), "not a folder"),
    ("retrieve index a bert folder", _with(FROM_INDEX, "--index", "{bert}"), "no index.json"),
    ("retrieve index a run folder", _with(FROM_INDEX, "--index", "{run}"), "no index.json"),
    ("retrieve index.json missing", _with(FROM_INDEX, "--index", "{bad}/index_nojson"), "no index.json"),
    ("retrieve index.json garbled", _with(FROM_INDEX, "--index", "{bad}/index_badjson"), "not valid JSON"),
    ("retrieve index.json a list", _with(FROM_INDEX, "--index", "{bad}/index_list"), "JSON dict"),
    ("retrieve index.json missing key", _with(FROM_INDEX, "--index", "{bad}/index_missingkey"), "fingerprint"),
    ("retrieve index.json unknown key", _with(FROM_INDEX, "--index", "{bad}/index_extrakey"), "bogus"),
    ("retrieve index.json wrong type", _with(FROM_INDEX, "--index", "{bad}/index_badtype"), "wrong type"),
    ("retrieve index.json wrong n", _with(FROM_INDEX, "--index", "{bad}/index_wrong_n"), "vectors.safetensors"),
    ("retrieve index model gone", _with(FROM_INDEX, "--index", "{bad}/index_gone_model"), "give --model"),
    ("retrieve index vectors missing", _with(FROM_INDEX, "--index", "{bad}/index_novectors"), "not found"),
    ("retrieve index vectors corrupt", _with(FROM_INDEX, "--index", "{bad}/index_badvectors"), "safetensors"),
    ("retrieve index sentences missing", _with(FROM_INDEX, "--index", "{bad}/index_nosentences"), "sentences.txt"),
    ("retrieve index sentences short", _with(FROM_INDEX, "--index", "{bad}/index_fewsentences"), "1 lines"),
    ("retrieve index sentences latin1", _with(FROM_INDEX, "--index", "{bad}/index_latin1sentences"), "UTF-8"),
    ("retrieve index other model", FROM_INDEX + ["--model", "{bert}"], "rebuild the index"),
    ("retrieve index model missing", FROM_INDEX + ["--model", "{bad}/nope"], "not found"),
    ("retrieve index top 0", FROM_INDEX + ["--top", "0"], "--top"),
    ("retrieve index queries latin1", [*FROM_INDEX[:4], "--queries", "{bad}/latin1.txt"], "latin1.txt"),
    # train: mining
    ("train mine_threshold above 1", _with(TRAIN, "--settings.mine_threshold", "1.5"), "--settings.mine_threshold"),
    ("train mine_threshold negative", _with(TRAIN, "--settings.mine_threshold", "-0.1"), "--settings.mine_threshold"),
    ("train mine_threshold text", _with(TRAIN, "--settings.mine_threshold", "high"), "--settings.mine_threshold"),
    ("train mine_max 0", _with(TRAIN, "--settings.mine_max", "0"), "--settings.mine_max"),
    ("train mine with --pairs", _with(TRAIN, "--settings.mine_threshold", "0.8"), "--pairs"),
    # eval
    ("eval gen_pairs 0", _with(EVAL, "--gen_pairs", "0"), "--gen_pairs"),
    ("eval gen_pairs negative", _with(EVAL, "--gen_pairs", "-5"), "--gen_pairs"),
    ("eval candidates 0", _with(EVAL, "--candidates", "0"), "--candidates"),
    ("eval candidates text", _with(EVAL, "--candidates", "many"), "--candidates"),
    ("eval generation not a bool", _with(EVAL, "--generation", "maybe"), "--generation"),
    ("eval split choice", _with(EVAL, "--split", "train"), "--split"),
    ("eval max_pairs 0", _with(EVAL, "--max_pairs", "0"), "--max_pairs"),
    ("eval one pair", _with(EVAL, "--pairs", "{bad}/one.tsv"), "at least 2 pairs"),
    ("eval pairs bad json", _with(EVAL, "--pairs", "{bad}/badjson.jsonl"), "line 1"),
    ("eval base missing", _with(EVAL, "--base", "{bad}/nope"), "--base"),
    ("eval base vae run", _with(EVAL, "--base", "{bad}/vae"), "--base"),
    ("eval results a folder", EVAL + ["--results", "{bad}"], "--results"),
    ("eval threads negative", EVAL + ["--threads", "-2"], "--threads"),
]


@pytest.mark.parametrize("args, match", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input(cli_error, paths, tmp_path, args, match):
    out = tmp_path / "out"
    filled = [a.format(out=out, **paths) for a in args]
    if args[:2] == ["simbert", "train"] and "--out" not in args:
        filled += ["--out", str(out)]
    cli_error(filled, out=out, match=match.format(**paths) if "{" in match else match)


def test_corrupt_faiss_index_is_one_line(cli_error, paths):
    if not _has_faiss():
        pytest.skip("faiss-cpu is not installed")
    bad = str(paths["bad"] / "index_badfaiss")
    cli_error(["simbert", "retrieve", "--index", bad, "--query", "the cat"], match="faiss index")


def test_bad_input_leaves_given_index_unchanged(cli_error, paths):
    index = paths["index"]
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    cli_error([a.format(**paths) for a in INDEX] + ["--max_len", "0", "--out", str(index), "--overwrite"], out=index)
    cli_error([a.format(**paths) for a in INDEX] + ["--out", str(index)], out=index, match="--overwrite")
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before


def test_bad_input_leaves_given_run_unchanged(cli_error, paths):
    run = paths["run"]
    before = sorted(p.name for p in run.iterdir())
    cli_error([a.format(**paths) for a in TRAIN] + ["--settings.lr", "0", "--out", str(run)], out=run)
    assert sorted(p.name for p in run.iterdir()) == before
