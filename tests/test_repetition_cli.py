"""``kexue repetition theory / measure / rebalance`` end to end on tiny inputs."""

import json

import numpy as np
import pytest

from kexue.cli import main

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is on the log"] * 5


@pytest.fixture
def corpus_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text("\n".join(CORPUS) + "\n")
    return d


def test_theory_on_a_matrix_file_gives_the_closed_form(tmp_path, capsys):
    np.save(tmp_path / "u.npy", np.full((4, 4), 0.25))
    main(
        [
            "repetition",
            "theory",
            "--matrix",
            str(tmp_path / "u.npy"),
            "--decoders",
            "sample,greedy",
            "--simulate",
            "20000",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    res = json.loads((tmp_path / "run" / "theory.json").read_text())
    assert res["decoders"]["sample"]["R"] == pytest.approx(1 / 3)  # uniform: 1/(n - 1)
    assert res["decoders"]["sample"]["lambda_1"] == pytest.approx(0.25)
    assert abs(res["decoders"]["sample"]["mc_z"]) < 4
    assert res["decoders"]["greedy"]["R"] is None and res["decoders"]["greedy"]["cycle_fraction"] == 1.0
    assert "diverges" in capsys.readouterr().out


def test_theory_on_a_corpus_and_user_errors(corpus_dir, tmp_path, capsys):
    main(
        [
            "repetition",
            "theory",
            "--corpus",
            str(corpus_dir),
            "--level",
            "word",
            "--decoders",
            "sample,top_k:2",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    res = json.loads((tmp_path / "run" / "theory.json").read_text())
    assert res["n"] == 10
    assert res["decoders"]["top_k:2"]["R"] > res["decoders"]["sample"]["R"] > 0
    with pytest.raises(SystemExit) as e:
        main(
            ["repetition", "theory", "--corpus", str(corpus_dir), "--decoders", "beam:3", "--out", str(tmp_path / "r2")]
        )
    assert e.value.code == 2 and "unknown decoder" in capsys.readouterr().err


def test_measure_texts_file(tmp_path):
    f = tmp_path / "gen.txt"
    f.write_text("a b a b a b\nx y z\n")
    main(["repetition", "measure", "--texts", str(f), "--out", str(tmp_path / "run")])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())[str(f)]
    assert m["loop_fraction"] == 0.5 and m["sequences"] == 2 and m["mean_length"] == 4.5


def test_measure_bigram_decoders(corpus_dir, tmp_path):
    main(
        [
            "repetition",
            "measure",
            "--corpus",
            str(corpus_dir),
            "--decoders",
            "sample,greedy",
            "--samples",
            "50",
            "--max_length",
            "40",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(m) == {"held-out text", "sample", "greedy"}
    # greedy from "the": the -> cat/dog/mat/log ... cycles until the length limit
    assert m["greedy"]["loop_at_end_fraction"] > m["sample"]["loop_at_end_fraction"]


def test_rebalance_learns_saves_and_applies(corpus_dir, tmp_path, capsys):
    f = tmp_path / "text.txt"
    f.write_text("the cat sat\n")
    main(
        [
            "repetition",
            "rebalance",
            "--corpus",
            str(corpus_dir),
            "--threshold",
            "0.2",
            "--apply",
            str(f),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["valid_round_trips"] == summary["valid_sentences"] == len(CORPUS)
    assert summary["tokens_per_unit"] < 0.5
    coded = json.loads((tmp_path / "run" / "encoded.jsonl").read_text().splitlines()[0])
    assert "".join(coded) == "the cat sat"
    assert "exact round trips on valid" in capsys.readouterr().out


def test_saved_configs_rerun_and_encodings_load(corpus_dir, tmp_path):
    from kexue.io import run_config

    np.savetxt(tmp_path / "p.csv", np.array([[0.2, 0.5], [0.3, 0.3]]), delimiter=",")
    main(
        [
            "repetition",
            "theory",
            "--matrix",
            str(tmp_path / "p.csv"),
            "--decoders",
            "sample,top_k:1",
            "--out",
            str(tmp_path / "t1"),
        ]
    )
    assert run_config(tmp_path / "t1")[0] == "repetition-theory"
    main(["repetition", "theory", "--config", str(tmp_path / "t1" / "config.yaml"), "--out", str(tmp_path / "t2")])
    assert (tmp_path / "t1" / "theory.json").read_text() == (tmp_path / "t2" / "theory.json").read_text()
    main(
        [
            "repetition",
            "measure",
            "--corpus",
            str(corpus_dir),
            "--decoders",
            "sample",
            "--samples",
            "10",
            "--max_sentences",
            "8",
            "--out",
            str(tmp_path / "m1"),
        ]
    )
    command, config = run_config(tmp_path / "m1")
    assert command == "repetition-measure" and config["max_sentences"] == 8 and "overwrite" not in config
    main(
        [
            "repetition",
            "measure",
            "--config",
            str(tmp_path / "m1" / "config.yaml"),
            "--out",
            str(tmp_path / "m1"),
            "--overwrite",
        ]
    )
    main(["repetition", "rebalance", "--corpus", str(corpus_dir), "--threshold", "0.2", "--out", str(tmp_path / "r1")])
    main(
        [
            "repetition",
            "rebalance",
            "--corpus",
            str(corpus_dir),
            "--encoding",
            str(tmp_path / "r1" / "encoding.json"),
            "--out",
            str(tmp_path / "r2"),
        ]
    )
    one, two = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("r1", "r2"))
    assert one["rounds"] == two["rounds"] and two["valid_round_trips"] == len(CORPUS)


@pytest.mark.parametrize("name", ["theory", "measure", "rebalance"])
def test_each_command_takes_the_arguments_of_its_recipe(name):
    """The CLI parses the command's signature and the recipe makes the run folder from its own: they agree."""
    import inspect

    from kexue.commands import repetition as command
    from kexue.recipes import repetition as recipe

    def params(fn):
        return [(p.name, p.default, p.annotation) for p in inspect.signature(fn).parameters.values()]

    assert params(getattr(command, name)) == params(getattr(recipe, name))


def test_recipes_write_the_run_folder_without_printing(corpus_dir, tmp_path, capsys):
    """Python callers get the run folder and its files from the recipes; only the commands print."""
    from kexue.io import run_config
    from kexue.recipes import repetition as recipe

    np.save(tmp_path / "u.npy", np.full((3, 3), 0.25))
    theory = recipe.theory(tmp_path / "u.npy", decoders="sample", out=tmp_path / "theory")
    assert theory.path == tmp_path / "theory" / "theory.json" and theory.n == 3
    assert theory.rows["sample"]["R"] == pytest.approx(json.loads(theory.path.read_text())["decoders"]["sample"]["R"])
    assert run_config(tmp_path / "theory")[0] == "repetition-theory"
    (tmp_path / "t.txt").write_text("a b a b\nc d\n")
    measured = recipe.measure(tmp_path / "t.txt", out=tmp_path / "measure")
    assert json.loads(measured.path.read_text()) == measured.table
    (tmp_path / "apply.txt").write_text("the cat\n")
    rebalanced = recipe.rebalance(str(corpus_dir), apply=tmp_path / "apply.txt", out=tmp_path / "rebalance")
    assert rebalanced.path == tmp_path / "rebalance" / "encoding.json"
    assert rebalanced.encoded == tmp_path / "rebalance" / "encoded.jsonl" and rebalanced.encoded_lines == 1
    assert json.loads((tmp_path / "rebalance" / "summary.json").read_text()) == rebalanced.summary
    assert capsys.readouterr().out == ""
