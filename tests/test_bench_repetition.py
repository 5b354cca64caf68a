"""The corpus-study pieces of ``kexue bench repetition`` (kexue.recipes.repetition) on a tiny corpus (the PTB run is
the benchmark)."""

import numpy as np
import pytest

from kexue.analysis.repetition import largest_eigenvalue, repetition_by_token, repetition_probability
from kexue.recipes.repetition import (
    check_claims,
    figures_of,
    jsonable,
    monte_carlo_check,
    plot_study,
    random_chain,
    run_study,
    study_level,
)

SENTS = [
    s.split()
    for s in [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a cat and a dog",
        "the mat is on the log",
        "a dog sat",
    ]
] * 3


def test_study_level_and_claims_on_a_tiny_corpus(tmp_path):
    decoders = ["sample", "top_p:0.9", "top_k:10", "top_k:2", "top_p:0.5", "greedy"]
    res = study_level(SENTS, decoders)
    d = res["decoders"]
    assert res["n"] == 10  # the cat sat on mat dog log a and is
    assert d["sample"]["R"] == pytest.approx(repetition_probability(res["chain"].P))
    assert d["top_k:2"]["R"] >= d["sample"]["R"] > 0
    assert d["greedy"]["R"] is None and 0 < d["greedy"]["cycle_fraction"] <= 1
    res.pop("chain")
    assert res.pop("by_token")["sample"].sum() == pytest.approx(d["sample"]["R"])
    detail = {"levels": {"word": res}, "mc": {"random": [], "corpus": [{"rel_error": -0.01, "z": -1.0}]}}
    claims = check_claims(detail)
    assert claims["word"]["greedy_worst"] is True
    figs = {f.key: f.value for f in figures_of(detail, "cmd")}
    assert figs["repetition.mc_rel_error_max"] == 0.01
    assert figs["repetition.ptb.word.R_top_k10"] == d["top_k:10"]["R"]
    assert figs["repetition.ptb.word.greedy_cycle_fraction"] == d["greedy"]["cycle_fraction"]
    png = plot_study(jsonable(detail), tmp_path / "fig.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_monte_carlo_check_reaches_its_target():
    P = random_chain(np.random.default_rng(0), 10, 0.5)
    R = repetition_probability(P)
    row = monte_carlo_check(
        P,
        R,
        largest_eigenvalue(P),
        seed=3,
        by_token=repetition_by_token(P),
        target_rel_se=0.02,
        min_chains=20_000,
        max_chains=2_000_000,
    )
    assert row["rel_stderr"] <= 0.0201 and abs(row["z"]) < 4 and abs(row["rel_error"]) < 0.05
    assert row["bias_bound"] < 1e-3 * R


def test_run_study_end_to_end_on_a_tiny_corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "train.txt").write_text("\n".join(" ".join(s) for s in SENTS) + "\n")
    detail = run_study(quick=True, corpus=str(d), log=lambda s: None, random_sizes=[(5, 0.5)], chains=(20_000, 400_000))
    assert set(detail["levels"]) == {"char", "word", "rebalanced"}
    assert len(detail["mc"]["random"]) == 3 and len(detail["mc"]["corpus"]) >= 6
    for row in detail["mc"]["random"] + detail["mc"]["corpus"]:
        assert abs(row["z"]) < 5  # loose: small chain budgets here
    keys = {f.key for f in figures_of(detail, "kexue bench repetition --quick")}
    assert "repetition.ptb.rebalanced.R_top_p90" in keys and "repetition.mc_rel_error_max" in keys
    from kexue.reproduce.repetition import _notes

    notes = _notes(jsonable(detail), quick=True)
    assert "**Claims**" in notes and "greedy is worst" in notes and "top 10 tokens carry" in notes


def test_level_sentences_cut_a_corpus_three_ways(tmp_path):
    from kexue.data.levels import check_corpus_folder, level_sentences
    from kexue.errors import KexueError

    d = tmp_path / "corpus"
    d.mkdir()
    (d / "train.txt").write_text("the cat sat\nthe dog\n")
    chars, info = level_sentences("char", str(d))
    assert chars[1] == ["t", "h", "e", " ", "d", "o", "g"] and info == {
        "level": "char",
        "corpus": str(d),
        "split": "train",
        "sentences": 2,
    }
    words, info = level_sentences("word", str(d), word_vocab=1)
    assert words == [["the", "<unk>", "<unk>"], ["the", "<unk>"]] and info["word_vocab"] == 1
    merged, info = level_sentences("rebalanced", str(d), threshold=0.2, iterations=2)
    assert ["".join(s) for s in merged] == ["the cat sat", "the dog"] and len(merged[0]) < len("the cat sat")
    assert info["rounds"] >= 1
    with pytest.raises(KexueError, match="level must be one of"):
        level_sentences("byte", str(d))
    with pytest.raises(KexueError, match="valid.txt"):
        check_corpus_folder(str(d), ("train", "valid"))
