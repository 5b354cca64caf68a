"""Bad input for `kexue nystrom`, `kexue repetition`, `kexue bench` and `kexue reproduce`.

Every row runs the command in-process and must end in one line `kexue: error: ...` with exit 2,
no traceback, and nothing left in the output folder (or at the output files) — before any heavy
work (no PTB, no benchmark, no training: the whole table runs in seconds). Rows name their
inputs with `{placeholders}` filled from the files made once per module below.
"""

import json
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from kexue.cli import main

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is on the log"] * 3
# the smallest listops run that trains in a fraction of a second
LISTOPS = [
    "--steps",
    "2",
    "--train_size",
    "16",
    "--test_size",
    "8",
    "--min_len",
    "8",
    "--max_len",
    "32",
    "--dim",
    "8",
    "--heads",
    "2",
    "--depth",
    "1",
    "--num_landmarks",
    "4",
    "--conv_kernel",
    "3",
    "--batch_size",
    "4",
]


def _write_config(folder, command, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(f"# kexue run config: {command}\n" + "".join(f"{ln}\n" for ln in lines))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad (and the few good) inputs the table refers to, by placeholder name."""
    d = tmp_path_factory.mktemp("bad_input_other")
    f = {"tmp": d}
    # a tiny listops run, and broken copies of it
    nys = d / "nys"
    main(["nystrom", "listops", *LISTOPS, "--out", str(nys)])
    f["nys"] = nys
    no_ckpt = d / "nys_no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(nys / "config.yaml", no_ckpt / "config.yaml")
    f["nys_no_ckpt"] = no_ckpt
    corrupt = d / "nys_corrupt"
    shutil.copytree(nys, corrupt)
    for w in (corrupt / "nystrom" / "checkpoints").glob("step-*/model.safetensors"):
        w.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    f["nys_corrupt"] = corrupt
    config = (nys / "config.yaml").read_text()
    for name, old, new in (
        ("nys_nodim", "dim: 8\n", ""),
        ("nys_strdim", "dim: 8\n", "dim: eight\n"),
        ("nys_exact", "attention: both\n", "attention: exact\n"),
    ):
        (d / name).mkdir()
        (d / name / "config.yaml").write_text(config.replace(old, new))
        f[name] = d / name
    _write_config(d / "theory_run", "repetition-theory", ["level: char"])
    f["theory_run"] = d / "theory_run"
    (d / "no_config").mkdir()
    f["no_config"] = d / "no_config"
    # folders and plain files
    (d / "folder").mkdir()
    f["folder"] = d / "folder"
    (d / "regular_file").write_text("x")
    f["regular_file"] = d / "regular_file"
    _write_config(d / "full_run", "bench-onlstm", ["hidden: 8"])
    f["full_run"] = d / "full_run"
    f["missing"] = d / "missing.txt"
    # text files
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    f["latin1"] = d / "latin1.txt"
    (d / "empty.txt").write_text("")
    f["empty"] = d / "empty.txt"
    (d / "blank.txt").write_text("\n  \n\n")
    f["blank"] = d / "blank.txt"
    (d / "unknown_key.yaml").write_text("bogus_key: 1\n")
    f["unknown_key_yaml"] = d / "unknown_key.yaml"
    (d / "not_results.json").write_text("{not json")
    f["not_results"] = d / "not_results.json"
    (d / "other_schema.json").write_text('{"a": 1}')
    f["other_schema"] = d / "other_schema.json"
    # corpora
    corpus = d / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("\n".join(CORPUS) + "\n")
    f["corpus"] = corpus
    (d / "no_valid").mkdir()
    (d / "no_valid" / "train.txt").write_text("\n".join(CORPUS) + "\n")
    f["no_valid"] = d / "no_valid"
    (d / "empty_corpus").mkdir()
    for split in ("train", "valid"):
        (d / "empty_corpus" / f"{split}.txt").write_text("")
    f["empty_corpus"] = d / "empty_corpus"
    # transition matrices
    np.save(d / "rect.npy", np.full((2, 3), 0.1))
    np.save(d / "negative.npy", np.array([[0.5, -0.1], [0.2, 0.2]]))
    np.save(d / "rows_over_one.npy", np.array([[0.9, 0.9], [0.1, 0.1]]))
    np.save(d / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(d / "empty_matrix.npy", np.zeros((0, 0)))
    (d / "truncated.npy").write_bytes((d / "rect.npy").read_bytes()[:60])
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    np.savez(d / "no_P.npz", Q=np.eye(2) * 0.5)
    np.savez(d / "P_rect.npz", P=np.ones((2, 3)) * 0.1)
    sp.save_npz(d / "sparse_over_one.npz", sp.csr_matrix(np.eye(3) * 1.5))
    (d / "empty.csv").write_text("")
    (d / "words.csv").write_text("a,b\n0.1,0.2\n")
    (d / "ragged.csv").write_text("0.1,0.2\n0.3\n")
    (d / "nan.csv").write_text("nan,0.1\n0.1,0.1\n")
    (d / "latin1.csv").write_bytes(b"0.1,0.2\n0.3,0.\xe9\n")
    (d / "matrix.json").write_text("[[0.5]]")
    for name in (
        "rect.npy",
        "negative.npy",
        "rows_over_one.npy",
        "strings.npy",
        "empty_matrix.npy",
        "truncated.npy",
        "objects.npy",
        "corrupt.npz",
        "no_P.npz",
        "P_rect.npz",
        "sparse_over_one.npz",
        "empty.csv",
        "words.csv",
        "ragged.csv",
        "nan.csv",
        "latin1.csv",
        "matrix.json",
    ):
        f[name.replace(".", "_")] = d / name
    (d / "matrix_dir.npy").mkdir()
    f["matrix_dir"] = d / "matrix_dir.npy"
    # encodings
    (d / "enc_not_json.json").write_text("{rounds")
    (d / "enc_list.json").write_text("[]")
    (d / "enc_shape.json").write_text(json.dumps({"joiner": "", "rounds": [["a", "b"]]}))
    (d / "enc_kind.json").write_text(json.dumps({"kind": "bpe", "joiner": "", "rounds": []}))
    (d / "enc_extra.json").write_text(json.dumps({"joiner": "", "rounds": [], "merges": []}))
    (d / "enc_collide.json").write_text(
        json.dumps({"joiner": "", "rounds": [[["a", "b"]], [["a", "b"]], [["ab", "c"], ["a", "bc"]]]})
    )
    for name in ("enc_not_json", "enc_list", "enc_shape", "enc_kind", "enc_extra", "enc_collide"):
        f[name] = d / f"{name}.json"
    (d / "repetition_detail.json").write_text(json.dumps({"levels": {"char": {"n": 3}}}))
    f["bad_detail"] = d / "repetition_detail.json"
    return f


# (id, command line, what must stay untouched: "out" = the fresh {out} folder, or a placeholder name, match)
NYSTROM_LISTOPS = [
    ("steps 0", "nystrom listops --steps 0 --out {out}", "out", "--steps 0"),
    ("steps negative", "nystrom listops --steps -5 --out {out}", "out", "--steps -5"),
    ("steps wrong type", "nystrom listops --steps ten --out {out}", "out", "--steps"),
    ("batch_size 0", "nystrom listops --batch_size 0 --out {out}", "out", "--batch_size"),
    ("lr negative", "nystrom listops --lr -1 --out {out}", "out", "--lr -1"),
    ("lr nan", "nystrom listops --lr nan --out {out}", "out", "--lr"),
    ("train_size 0", "nystrom listops --train_size 0 --out {out}", "out", "--train_size"),
    ("test_size 0", "nystrom listops --test_size 0 --out {out}", "out", "--test_size"),
    ("min_len 0", "nystrom listops --min_len 0 --out {out}", "out", "--min_len"),
    ("min_len > max_len", "nystrom listops --min_len 100 --max_len 50 --out {out}", "out", "--min_len 100"),
    ("max_len below shortest expression", "nystrom listops --min_len 1 --max_len 3 --out {out}", "out", "--max_len 3"),
    ("min_len unreachable at depth", "nystrom listops --max_depth 1 --min_len 60 --out {out}", "out", "--max_depth 1"),
    ("max_depth 0", "nystrom listops --max_depth 0 --out {out}", "out", "--max_depth"),
    ("max_args 1", "nystrom listops --max_args 1 --out {out}", "out", "--max_args 1"),
    ("dim 0", "nystrom listops --dim 0 --out {out}", "out", "--dim 0"),
    ("depth 0", "nystrom listops --depth 0 --out {out}", "out", "--depth 0"),
    ("heads 0", "nystrom listops --heads 0 --out {out}", "out", "--heads 0"),
    ("heads not dividing dim", "nystrom listops --dim 10 --heads 3 --out {out}", "out", "--heads 3"),
    ("num_landmarks 0", "nystrom listops --num_landmarks 0 --out {out}", "out", "--num_landmarks"),
    ("conv_kernel even", "nystrom listops --conv_kernel 4 --out {out}", "out", "--conv_kernel 4"),
    ("conv_kernel 0", "nystrom listops --conv_kernel 0 --out {out}", "out", "--conv_kernel"),
    ("exact_conv without kernel", "nystrom listops --conv_kernel null --exact_conv --out {out}", "out", "--exact_conv"),
    ("dropout 1", "nystrom listops --dropout 1 --out {out}", "out", "--dropout 1"),
    ("dropout negative", "nystrom listops --dropout -0.1 --out {out}", "out", "--dropout"),
    ("threads 0", "nystrom listops --threads 0 --out {out}", "out", "--threads 0"),
    ("threads negative", "nystrom listops --threads -2 --out {out}", "out", "--threads -2"),
    ("seed negative", "nystrom listops --seed -1 --out {out}", "out", "--seed -1"),
    ("attention bad choice", "nystrom listops --attention linear --out {out}", "out", "--attention linear"),
    ("results is a folder", "nystrom listops --results {folder} --out {out}", "out", "is a folder"),
    ("results not JSON", "nystrom listops --results {not_results} --out {out}", "not_results", "--results"),
    (
        "results other schema",
        "nystrom listops --results {other_schema} --out {out}",
        "other_schema",
        "results.json schema",
    ),
    ("out is a regular file", "nystrom listops --out {regular_file}", "regular_file", "--out"),
    ("out under /proc", "nystrom listops --out /proc/kexue_probe", None, "/proc/kexue_probe"),
    ("out not empty", "nystrom listops --out {full_run}", "full_run", "not empty"),
    ("resume with nothing to resume", "nystrom listops --resume --out {folder}", "folder", "--resume"),
    ("resume and overwrite", "nystrom listops --resume --overwrite --out {full_run}", "full_run", "--overwrite"),
    (
        "resume with changed model",
        "nystrom listops " + " ".join(LISTOPS).replace("--dim 8", "--dim 16") + " --resume --out {nys}",
        "nys",
        "dim 8 -> 16",
    ),
    ("config unknown key", "nystrom listops --config {unknown_key_yaml} --out {out}", "out", "bogus_key"),
    ("config missing", "nystrom listops --config {missing} --out {out}", "out", "missing.txt"),
    ("config non-UTF-8", "nystrom listops --config {latin1} --out {out}", "out", "UTF-8"),
]

NYSTROM_ERRORS = [
    (
        "figure is a folder (finding)",
        "nystrom errors --run {nys} --length 16 --landmarks+ 4 --figure {folder}",
        "folder",
        "--figure",
    ),
    (
        "results is a folder (finding)",
        "nystrom errors --run {nys} --length 16 --landmarks+ 4 --results {folder}",
        "folder",
        "--results",
    ),
    (
        "results under /proc",
        "nystrom errors --run {nys} --length 16 --landmarks+ 4 --results /proc/kexue_probe/r.json",
        None,
        "--results",
    ),
    (
        "figure under a regular file",
        "nystrom errors --run {nys} --length 16 --landmarks+ 4 --figure {regular_file}/f.png",
        "regular_file",
        "--figure",
    ),
    (
        "results not a results file",
        "nystrom errors --run {nys} --length 16 --landmarks+ 4 --results {not_results}",
        "not_results",
        "--results",
    ),
    ("run missing", "nystrom errors --run {tmp}/nope", None, "--run"),
    ("run is a file", "nystrom errors --run {regular_file}", None, "--run"),
    ("run without config", "nystrom errors --run {no_config}", None, "config.yaml"),
    ("run of another command", "nystrom errors --run {theory_run}", None, "repetition-theory"),
    ("run config lacks a key", "nystrom errors --run {nys_nodim} --length 16 --landmarks+ 4", None, "'dim'"),
    ("run config with a string", "nystrom errors --run {nys_strdim} --length 16 --landmarks+ 4", None, "dim must be"),
    ("run trained only exact", "nystrom errors --run {nys_exact} --length 16 --landmarks+ 4", None, "exact"),
    ("run without checkpoints", "nystrom errors --run {nys_no_ckpt} --length 16 --landmarks+ 4", None, "checkpoint"),
    ("run with corrupt weights", "nystrom errors --run {nys_corrupt} --length 16 --landmarks+ 4", None, "weights"),
    ("length 0", "nystrom errors --run {nys} --length 0", None, "--length 0"),
    ("length negative", "nystrom errors --run {nys} --length -16", None, "--length"),
    ("length not a multiple of m", "nystrom errors --run {nys} --length 18 --landmarks+ 4", None, "multiple"),
    ("length over max_len", "nystrom errors --run {nys} --length 64 --landmarks+ 4", None, "max_len 32"),
    ("length below 4", "nystrom errors --run {nys} --length 2 --landmarks+ 2", None, "--length 2"),
    ("landmarks 0", "nystrom errors --run {nys} --length 16 --landmarks+ 0", None, "--landmarks"),
    ("landmarks empty", "nystrom errors --run {nys} --length 16 --landmarks []", None, "--landmarks"),
    ("landmarks wrong type", "nystrom errors --run {nys} --length 16 --landmarks+ many", None, "--landmarks"),
    ("num_sequences 0", "nystrom errors --run {nys} --length 16 --num_sequences 0", None, "--num_sequences"),
]

REPETITION = [
    ("theory level bad choice", "repetition theory --level byte --out {out}", "out", "--level byte"),
    ("theory no decoder", "repetition theory --decoders , --out {out}", "out", "--decoders"),
    ("theory unknown decoder", "repetition theory --decoders beam:3 --out {out}", "out", "beam:3"),
    ("theory top_k 0", "repetition theory --decoders sample,top_k:0 --out {out}", "out", "top_k:0"),
    ("theory top_p over 1", "repetition theory --decoders top_p:1.5 --out {out}", "out", "top_p"),
    ("theory temp 0", "repetition theory --decoders temp:0 --out {out}", "out", "temp:0"),
    ("theory simulate negative", "repetition theory --simulate -1 --out {out}", "out", "--simulate -1"),
    ("theory seed negative", "repetition theory --seed -3 --out {out}", "out", "--seed -3"),
    ("theory max_sentences 0", "repetition theory --max_sentences 0 --out {out}", "out", "--max_sentences 0"),
    ("theory word_vocab 0", "repetition theory --word_vocab 0 --out {out}", "out", "--word_vocab 0"),
    ("theory corpus missing", "repetition theory --corpus {tmp}/nope --out {out}", "out", "--corpus"),
    ("theory corpus empty", "repetition theory --corpus {empty_corpus} --out {out}", "out", "train.txt"),
    ("theory out is a file", "repetition theory --corpus {corpus} --out {regular_file}", "regular_file", "--out"),
    ("theory out under /proc", "repetition theory --corpus {corpus} --out /proc/kexue_probe", None, "/proc"),
    ("theory out not empty", "repetition theory --corpus {corpus} --out {full_run}", "full_run", "not empty"),
    ("theory config unknown key", "repetition theory --config {unknown_key_yaml} --out {out}", "out", "bogus_key"),
    ("matrix missing", "repetition theory --matrix {tmp}/nope.npy --out {out}", "out", "not found"),
    ("matrix is a folder", "repetition theory --matrix {matrix_dir} --out {out}", "out", "folder"),
    ("matrix suffix", "repetition theory --matrix {matrix_json} --out {out}", "out", ".npy"),
    ("matrix not square", "repetition theory --matrix {rect_npy} --out {out}", "out", "square"),
    ("matrix empty", "repetition theory --matrix {empty_matrix_npy} --out {out}", "out", "non-empty"),
    ("matrix negative", "repetition theory --matrix {negative_npy} --out {out}", "out", "negative"),
    ("matrix rows over 1", "repetition theory --matrix {rows_over_one_npy} --out {out}", "out", "sums to"),
    ("matrix of strings", "repetition theory --matrix {strings_npy} --out {out}", "out", "not real numbers"),
    ("matrix truncated npy", "repetition theory --matrix {truncated_npy} --out {out}", "out", "truncated.npy"),
    ("matrix pickled objects", "repetition theory --matrix {objects_npy} --out {out}", "out", "objects.npy"),
    ("matrix corrupt npz", "repetition theory --matrix {corrupt_npz} --out {out}", "out", "corrupt"),
    ("matrix npz without P", "repetition theory --matrix {no_P_npz} --out {out}", "out", "named P"),
    ("matrix npz P not square", "repetition theory --matrix {P_rect_npz} --out {out}", "out", "square"),
    ("matrix sparse rows over 1", "repetition theory --matrix {sparse_over_one_npz} --out {out}", "out", "sums to"),
    ("matrix empty csv", "repetition theory --matrix {empty_csv} --out {out}", "out", "non-empty"),
    ("matrix csv of words", "repetition theory --matrix {words_csv} --out {out}", "out", "numeric"),
    ("matrix ragged csv", "repetition theory --matrix {ragged_csv} --out {out}", "out", "ragged.csv"),
    ("matrix csv with nan", "repetition theory --matrix {nan_csv} --out {out}", "out", "non-finite"),
    ("matrix csv non-UTF-8", "repetition theory --matrix {latin1_csv} --out {out}", "out", "UTF-8"),
    (
        "measure unit bad choice",
        "repetition measure --texts {corpus}/train.txt --unit byte --out {out}",
        "out",
        "--unit",
    ),
    ("measure level bad choice", "repetition measure --level byte --out {out}", "out", "--level"),
    ("measure samples 0", "repetition measure --samples 0 --out {out}", "out", "--samples 0"),
    ("measure max_length negative", "repetition measure --max_length -1 --out {out}", "out", "--max_length"),
    ("measure seed wrong type", "repetition measure --seed one --out {out}", "out", "--seed"),
    (
        "measure unknown decoder",
        "repetition measure --corpus {corpus} --decoders sample,nucleus --out {out}",
        "out",
        "nucleus",
    ),
    ("measure texts missing", "repetition measure --texts {missing} --out {out}", "out", "not found"),
    ("measure texts folder", "repetition measure --texts {folder} --out {out}", "out", "folder"),
    ("measure texts non-UTF-8", "repetition measure --texts {latin1} --out {out}", "out", "UTF-8"),
    ("measure texts empty", "repetition measure --texts {empty} --out {out}", "out", "no text"),
    ("measure texts blank lines", "repetition measure --texts {blank} --out {out}", "out", "no text"),
    ("measure corpus without valid", "repetition measure --corpus {no_valid} --out {out}", "out", "valid.txt"),
    (
        "measure out not empty",
        "repetition measure --texts {corpus}/train.txt --out {full_run}",
        "full_run",
        "not empty",
    ),
    ("rebalance threshold 0", "repetition rebalance --threshold 0 --out {out}", "out", "--threshold 0"),
    ("rebalance threshold 1", "repetition rebalance --threshold 1 --out {out}", "out", "--threshold 1"),
    ("rebalance threshold 2", "repetition rebalance --threshold 2 --out {out}", "out", "--threshold 2"),
    ("rebalance iterations 0", "repetition rebalance --iterations 0 --out {out}", "out", "--iterations 0"),
    ("rebalance iterations wrong type", "repetition rebalance --iterations 2.5 --out {out}", "out", "--iterations"),
    ("rebalance level bad choice", "repetition rebalance --level rebalanced --out {out}", "out", "--level"),
    (
        "rebalance max_sentences negative",
        "repetition rebalance --max_sentences -1 --out {out}",
        "out",
        "--max_sentences",
    ),
    (
        "rebalance encoding missing",
        "repetition rebalance --corpus {corpus} --encoding {missing} --out {out}",
        "out",
        "not found",
    ),
    (
        "rebalance encoding folder",
        "repetition rebalance --corpus {corpus} --encoding {folder} --out {out}",
        "out",
        "folder",
    ),
    (
        "rebalance encoding non-UTF-8",
        "repetition rebalance --corpus {corpus} --encoding {latin1} --out {out}",
        "out",
        "UTF-8",
    ),
    (
        "rebalance encoding empty",
        "repetition rebalance --corpus {corpus} --encoding {empty} --out {out}",
        "out",
        "JSON",
    ),
    (
        "rebalance encoding not JSON",
        "repetition rebalance --corpus {corpus} --encoding {enc_not_json} --out {out}",
        "out",
        "JSON",
    ),
    (
        "rebalance encoding a list",
        "repetition rebalance --corpus {corpus} --encoding {enc_list} --out {out}",
        "out",
        "dict",
    ),
    (
        "rebalance encoding bad rounds",
        "repetition rebalance --corpus {corpus} --encoding {enc_shape} --out {out}",
        "out",
        "malformed",
    ),
    (
        "rebalance encoding other kind",
        "repetition rebalance --corpus {corpus} --encoding {enc_kind} --out {out}",
        "out",
        "bpe",
    ),
    (
        "rebalance encoding extra key",
        "repetition rebalance --corpus {corpus} --encoding {enc_extra} --out {out}",
        "out",
        "merges",
    ),
    (
        "rebalance encoding collides",
        "repetition rebalance --corpus {corpus} --encoding {enc_collide} --out {out}",
        "out",
        "abc",
    ),
    (
        "rebalance apply missing",
        "repetition rebalance --corpus {corpus} --apply {missing} --out {out}",
        "out",
        "not found",
    ),
    (
        "rebalance apply non-UTF-8",
        "repetition rebalance --corpus {corpus} --apply {latin1} --out {out}",
        "out",
        "UTF-8",
    ),
    ("rebalance apply empty", "repetition rebalance --corpus {corpus} --apply {empty} --out {out}", "out", "no text"),
    ("rebalance corpus without valid", "repetition rebalance --corpus {no_valid} --out {out}", "out", "valid.txt"),
    ("rebalance corpus empty", "repetition rebalance --corpus {empty_corpus} --out {out}", "out", "train.txt"),
    ("rebalance out not empty", "repetition rebalance --corpus {corpus} --out {full_run}", "full_run", "not empty"),
    ("rebalance out under /proc", "repetition rebalance --corpus {corpus} --out /proc/kexue_probe", None, "/proc"),
]

BENCH = [
    ("nystrom lengths 0", "bench nystrom --lengths+ 0 --out {out}", "out", "--lengths"),
    ("nystrom lengths empty", "bench nystrom --lengths [] --out {out}", "out", "--lengths"),
    ("nystrom lengths wrong type", "bench nystrom --lengths+ long --out {out}", "out", "--lengths"),
    (
        "nystrom length not multiple of m",
        "bench nystrom --lengths [64,100] --num_landmarks 16 --out {out}",
        "out",
        "[100]",
    ),
    ("nystrom error_lengths negative", "bench nystrom --error_lengths+ -512 --out {out}", "out", "--error_lengths"),
    ("nystrom error_landmarks 0", "bench nystrom --error_landmarks+ 0 --out {out}", "out", "--error_landmarks"),
    (
        "nystrom error length not multiple",
        "bench nystrom --error_lengths+ 100 --error_landmarks+ 16 --out {out}",
        "out",
        "multiple",
    ),
    ("nystrom num_landmarks 0", "bench nystrom --num_landmarks 0 --out {out}", "out", "--num_landmarks 0"),
    ("nystrom repeats 0", "bench nystrom --repeats 0 --out {out}", "out", "--repeats 0"),
    ("nystrom threads 0", "bench nystrom --threads 0 --out {out}", "out", "--threads 0"),
    ("nystrom threads negative", "bench nystrom --threads -2 --out {out}", "out", "--threads -2"),
    ("nystrom quick not a bool", "bench nystrom --quick maybe --out {out}", "out", "--quick"),
    ("nystrom results folder", "bench nystrom --quick --results {folder} --out {out}", "out", "--results"),
    (
        "nystrom results not JSON",
        "bench nystrom --quick --results {not_results} --out {out}",
        "not_results",
        "--results",
    ),
    ("nystrom details folder", "bench nystrom --quick --details {folder} --out {out}", "out", "--details"),
    (
        "nystrom error_figure folder",
        "bench nystrom --quick --error_figure {folder} --out {out}",
        "out",
        "--error_figure",
    ),
    (
        "nystrom time_figure /proc",
        "bench nystrom --quick --time_figure /proc/kexue_probe/t.png --out {out}",
        "out",
        "--time_figure",
    ),
    ("nystrom out is a file", "bench nystrom --quick --out {regular_file}", "regular_file", "--out"),
    ("nystrom out /proc", "bench nystrom --quick --out /proc/kexue_probe", None, "/proc"),
    ("nystrom out not empty", "bench nystrom --quick --out {full_run}", "full_run", "not empty"),
    ("nystrom config unknown key", "bench nystrom --config {unknown_key_yaml} --out {out}", "out", "bogus_key"),
    ("onlstm hidden 0", "bench onlstm --hidden 0 --out {out}", "out", "--hidden 0"),
    ("onlstm input_size negative", "bench onlstm --input_size -4 --out {out}", "out", "--input_size"),
    ("onlstm layers 0", "bench onlstm --layers 0 --out {out}", "out", "--layers 0"),
    ("onlstm chunk 0", "bench onlstm --chunk_size 0 --out {out}", "out", "--chunk_size 0"),
    ("onlstm chunk not dividing", "bench onlstm --hidden 10 --chunk_size 3 --out {out}", "out", "--chunk_size 3"),
    ("onlstm batch 0", "bench onlstm --batch 0 --out {out}", "out", "--batch 0"),
    ("onlstm bptt 0", "bench onlstm --bptt 0 --out {out}", "out", "--bptt 0"),
    ("onlstm rounds 0", "bench onlstm --rounds 0 --out {out}", "out", "--rounds 0"),
    ("onlstm rounds wrong type", "bench onlstm --rounds many --out {out}", "out", "--rounds"),
    ("onlstm threads 0", "bench onlstm --threads 0 --out {out}", "out", "--threads 0"),
    ("onlstm results folder", "bench onlstm --results {folder} --out {out}", "out", "--results"),
    ("onlstm results other schema", "bench onlstm --results {other_schema} --out {out}", "other_schema", "--results"),
    ("onlstm out is a file", "bench onlstm --out {regular_file}", "regular_file", "--out"),
    ("onlstm out not empty", "bench onlstm --out {full_run}", "full_run", "not empty"),
    ("onlstm details folder", "bench onlstm --details {folder} --out {out}", "out", "--details"),
    (
        "onlstm details under a regular file",
        "bench onlstm --details {regular_file}/t.json --out {out}",
        "out",
        "--details",
    ),
    ("decoding layers 0", "bench decoding --layers 0 --out {out}", "out", "--layers 0"),
    ("decoding width not multiple of heads", "bench decoding --width 10 --heads 3 --out {out}", "out", "--heads 3"),
    ("decoding vocab 0", "bench decoding --vocab 0 --out {out}", "out", "--vocab 0"),
    ("decoding batch negative", "bench decoding --batch -1 --out {out}", "out", "--batch"),
    (
        "decoding prompt beyond positions",
        "bench decoding --prompt_len 1000 --new_tokens 100 --out {out}",
        "out",
        "1024",
    ),
    ("decoding repeats 0", "bench decoding --repeats 0 --out {out}", "out", "--repeats 0"),
    ("decoding modes empty", "bench decoding --modes , --out {out}", "out", "--modes"),
    ("decoding modes unknown", "bench decoding --modes greedy,beam8 --out {out}", "out", "beam8"),
    ("decoding threads 0", "bench decoding --threads 0 --out {out}", "out", "--threads 0"),
    ("decoding seed negative", "bench decoding --seed -1 --out {out}", "out", "--seed"),
    ("decoding results folder", "bench decoding --results {folder} --out {out}", "out", "--results"),
    ("decoding out /proc", "bench decoding --out /proc/kexue_probe", None, "/proc"),
    ("decoding out not empty", "bench decoding --out {full_run}", "full_run", "not empty"),
    ("decoding details folder", "bench decoding --details {folder} --out {out}", "out", "--details"),
    ("repetition seed negative", "bench repetition --seed -1 --out {out}", "out", "--seed"),
    ("repetition results folder", "bench repetition --results {folder} --out {out}", "out", "--results"),
    ("repetition results not JSON", "bench repetition --results {not_results} --out {out}", "not_results", "--results"),
    ("repetition details folder", "bench repetition --details {folder} --out {out}", "out", "--details"),
    ("repetition figure folder", "bench repetition --figure {folder} --out {out}", "out", "--figure"),
    ("repetition out is a file", "bench repetition --out {regular_file}", "regular_file", "--out"),
    ("repetition out not empty", "bench repetition --out {full_run}", "full_run", "not empty"),
    ("repetition config unknown key", "bench repetition --config {unknown_key_yaml} --out {out}", "out", "bogus_key"),
    ("replot without figure", "bench repetition --replot --details {bad_detail}", None, "--figure"),
    ("replot without details", "bench repetition --replot --figure {tmp}/f.png", None, "--details"),
    ("replot details missing", "bench repetition --replot --details {missing} --figure {tmp}/f.png", None, "not found"),
    (
        "replot details not a study",
        "bench repetition --replot --details {bad_detail} --figure {tmp}/f.png",
        None,
        "repetition study",
    ),
    ("replot details non-UTF-8", "bench repetition --replot --details {latin1} --figure {tmp}/f.png", None, "UTF-8"),
    (
        "replot figure folder",
        "bench repetition --replot --details {bad_detail} --figure {folder}",
        "folder",
        "--figure",
    ),
    (
        "replot with out",
        "bench repetition --replot --details {bad_detail} --figure {tmp}/f.png --out {out}",
        "out",
        "--out",
    ),
]

REPRODUCE = [
    ("only ',' (finding)", "reproduce --only , --out {out}", "out", "--only"),
    ("only empty", "reproduce --only= --out {out}", "out", "--only"),
    ("only unknown section", "reproduce --only vae,nystromformer --out {out}", "out", "nystromformer"),
    ("quick and full", "reproduce --quick --full --out {out}", "out", "--quick and --full"),
    ("quick not a bool", "reproduce --quick often --out {out}", "out", "--quick"),
    ("out is a file", "reproduce --only nystrom --out {regular_file}", "regular_file", "--out"),
    ("out under /proc", "reproduce --only nystrom --out /proc/kexue_probe", None, "/proc"),
    ("out under a regular file", "reproduce --only nystrom --out {regular_file}/sub", "regular_file", "--out"),
    ("out not empty", "reproduce --only nystrom --out {full_run}", "full_run", "not empty"),
    (
        "overwrite a folder that is no run",
        "reproduce --only nystrom --overwrite --out {nys}/nystrom",
        "nys",
        "not a kexue run folder",
    ),
    ("config unknown key", "reproduce --config {unknown_key_yaml} --out {out}", "out", "bogus_key"),
]

ROWS = NYSTROM_LISTOPS + NYSTROM_ERRORS + REPETITION + BENCH + REPRODUCE


@pytest.mark.parametrize("case, command, keep, match", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(case, command, keep, match, files, tmp_path, cli_error):
    paths = {k: str(v) for k, v in files.items()} | {"out": str(tmp_path / "out")}
    args = [a.format(**paths) for a in command.split()]
    watched = None if keep is None else (tmp_path / "out" if keep == "out" else files[keep])
    if watched is not None and watched.is_file():  # a file must keep its bytes: watch its folder
        watched = watched.parent
    cli_error(args, out=watched, match=match)


def test_every_command_of_the_area_has_rows():
    commands = {" ".join(r[1].split()[:2]) for r in ROWS}
    assert commands >= {
        "nystrom listops",
        "nystrom errors",
        "repetition theory",
        "repetition measure",
        "repetition rebalance",
        "bench nystrom",
        "bench onlstm",
        "bench decoding",
        "bench repetition",
    } and any(r[1].startswith("reproduce") for r in ROWS)


# ---- bench commands write into their run folder; benchmarks/results/ only when asked --------

TINY_ONLSTM = [
    "--input_size",
    "4",
    "--hidden",
    "8",
    "--layers",
    "1",
    "--chunk_size",
    "4",
    "--batch",
    "2",
    "--bptt",
    "3",
    "--rounds",
    "1",
    "--threads",
    "1",
]


def test_bench_writes_into_runs_by_default_and_merges_only_with_results(tmp_path, monkeypatch):
    from kexue.io import run_config

    monkeypatch.chdir(tmp_path)
    main(["bench", "onlstm", *TINY_ONLSTM])
    (run,) = (tmp_path / "runs").glob("bench-onlstm-*")
    assert {p.name for p in run.iterdir()} == {"config.yaml", "results.json", "timings.json"}
    assert run_config(run)[0] == "bench-onlstm"
    assert not (tmp_path / "benchmarks").exists()
    # its config reruns it
    main(["bench", "onlstm", "--config", str(run / "config.yaml"), "--out", "again"])
    assert (
        json.loads((tmp_path / "again" / "results.json").read_text()).keys()
        == json.loads((run / "results.json").read_text()).keys()
    )
    # --results merges, keeping what the file held
    results = tmp_path / "benchmarks" / "results" / "onlstm.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"onlstm.other": {"value": 1.0, "published": None, "source": None, "command": "x"}}))
    main(["bench", "onlstm", *TINY_ONLSTM, "--out", "merged", "--results", str(results)])
    merged = json.loads(results.read_text())
    assert "onlstm.other" in merged and "onlstm.speed.ratio_vs_nn_lstm" in merged
    assert sorted(p.name for p in results.parent.iterdir()) == ["onlstm.json"]


def test_bench_repetition_writes_only_its_run_folder_unless_asked(tmp_path, monkeypatch):
    import kexue.bench.repetition as bench_repetition
    from kexue.recipes.repetition import check_claims, study_level

    def tiny_study(quick, seed):
        sents = [s.split() for s in CORPUS]
        res = study_level(sents, ["sample", "top_p:0.9", "top_k:10", "top_k:2", "top_p:0.5", "greedy"])
        res.pop("chain")
        res.pop("by_token")
        detail = {
            "quick": quick,
            "seed": seed,
            "levels": {"word": res},
            "mc": {"random": [{"rel_error": 0.01, "z": 0.5, "rel_stderr": 0.01}], "corpus": []},
        }
        detail["claims"] = check_claims(detail)
        return detail

    monkeypatch.setattr(bench_repetition, "run_study", tiny_study)
    monkeypatch.chdir(tmp_path)
    main(["bench", "repetition", "--quick", "--out", "run"])
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"config.yaml", "results.json", "detail.json", "study.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    results = tmp_path / "benchmarks" / "results" / "repetition.json"
    main(
        [
            "bench",
            "repetition",
            "--quick",
            "--out",
            "run2",
            "--results",
            str(results),
            "--details",
            "benchmarks/results/repetition_detail.json",
            "--figure",
            "docs/study.png",
        ]
    )
    assert "repetition.ptb.word.R_top_p90" in json.loads(results.read_text())
    assert json.loads((tmp_path / "benchmarks/results/repetition_detail.json").read_text())["levels"]["word"]["n"] == 10
    assert (tmp_path / "docs" / "study.png").read_bytes()[:4] == b"\x89PNG"
    # --replot redraws from the detail JSON and makes no run folder
    main(
        [
            "bench",
            "repetition",
            "--replot",
            "--details",
            "benchmarks/results/repetition_detail.json",
            "--figure",
            "redrawn.png",
        ]
    )
    assert (tmp_path / "redrawn.png").is_file() and not (tmp_path / "runs").exists()
