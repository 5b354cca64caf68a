"""Issue 15: class-conditional generation checked label-free (self-consistency), the reproduce section's
two recipes side by side, and the ablation script's commands."""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from kexue.cli import main
from kexue.models.vae_cluster import ClusterVAE
from kexue.recipes.vae_cluster import (
    DEFAULT_SETTINGS,
    METRICS,
    PRETRAIN_FIELDS,
    VAEClusterConfig,
    collect_studies,
    self_consistency,
    train_run,
)

ROOT = Path(__file__).resolve().parents[1]


class PixelsAreCodes(nn.Module):
    """Encoder whose μ is the image itself (one row of d pixels) and log σ² = 0: (B, 1, 1, d) -> (B, 2d)."""

    def forward(self, x):
        mu = x.flatten(1)
        return torch.cat([mu, torch.zeros_like(mu)], -1)


class NearestMean(nn.Module):
    """Classifier that reads the class means: logits_k = z·m_k − ½‖m_k‖², argmax = the nearest mean."""

    def __init__(self, means: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means.clone())

    def forward(self, z):
        return z @ self.means.T - 0.5 * self.means.pow(2).sum(-1)


def _identity_model(means: list[list[float]], classifier_means: list[list[float]] | None = None) -> ClusterVAE:
    """Decoder = identity (the image is z), encoder = identity, classifier = nearest of ``classifier_means``."""
    means_t = torch.tensor(means)
    K, d = means_t.shape
    m = ClusterVAE((1, d), latent_dim=d, num_classes=K, backbone="mlp")
    m.encoder, m.decoder = PixelsAreCodes(), nn.Unflatten(1, (1, 1, d))  # x = G(z) = z
    m.classifier = NearestMean(torch.tensor(classifier_means) if classifier_means is not None else means_t)
    with torch.no_grad():
        m.class_means.copy_(means_t)
    return m


def test_self_consistency_on_a_hand_built_model_with_a_known_answer():
    # far apart means (40 standard deviations): every sample comes back to its own class
    far = [[0.0, 0.0], [40.0, 0.0], [0.0, 40.0]]
    assert self_consistency(_identity_model(far), per_class=200, seed=0) == 1.0
    # a classifier whose classes are the means rotated by one: nothing comes back
    assert self_consistency(_identity_model(far, far[1:] + far[:1]), per_class=200, seed=0) == 0.0
    # d = 1, μ = (0, 1), nearest-mean threshold ½: P(right) = Φ(½) for both classes, z ~ N(μ_y, 1)
    near = _identity_model([[0.0], [1.0]])
    expected = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))  # 0.6915
    assert self_consistency(near, per_class=20000, seed=0) == pytest.approx(expected, abs=0.01)
    # the same seed draws the same samples; a score is a fraction
    assert self_consistency(near, per_class=50, seed=3) == self_consistency(near, per_class=50, seed=3)
    assert 0.0 <= self_consistency(near, per_class=50, seed=4) <= 1.0


def test_self_consistency_draws_from_the_learned_prior_variance():
    """VaDE's prior: a tight class variance makes overlapping unit-variance classes separable."""
    m = ClusterVAE((1, 1), latent_dim=1, num_classes=2, backbone="mlp", prior="learned")
    m.encoder, m.decoder, m.classifier = (
        PixelsAreCodes(),
        nn.Unflatten(1, (1, 1, 1)),
        NearestMean(torch.tensor([[0.0], [1.0]])),
    )
    with torch.no_grad():
        m.class_means.copy_(torch.tensor([[0.0], [1.0]]))
        m.class_logvar.fill_(math.log(0.01))  # σ = 0.1: the threshold ½ is 5 σ away
    assert self_consistency(m, per_class=2000, seed=0) == pytest.approx(1.0, abs=1e-3)


# ---- the commands: eval writes it, sample prints it -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vae-gen") / "run"
    train_run("digits", run, VAEClusterConfig(epochs=1, pretrain_epochs=0, gmm_init=False), device="cpu")
    return run


def test_eval_writes_sample_self_consistency_and_sample_prints_it(tiny_run, tmp_path, capsys):
    main(["vae-cluster", "eval", "--run", str(tiny_run)])
    record = json.loads((tiny_run / "eval.json").read_text())
    assert 0.0 <= record["sample_self_consistency"] <= 1.0
    assert "assigned back to their own cluster" in capsys.readouterr().out
    main(["vae-cluster", "sample", "--run", str(tiny_run), "--out", str(tmp_path / "png"), "--per_class", "5"])
    printed = capsys.readouterr().out
    assert "of the 5 samples per class are assigned back to their own cluster" in printed
    assert (tmp_path / "png" / "samples.png").is_file()


# ---- the reproduce section -------------------------------------------------------------------------


def test_side_by_side_table_names_both_recipes_and_the_published_metrics():
    from kexue.reproduce.vae_cluster import published_text, side_by_side, with_anchor
    from kexue.results import Figure

    assert published_text("su2018", "mnist5k") == "84.50 majority (kexue.fm/archives/5887)"
    assert published_text("su2018", "fashion_mnist") == "60.60 majority (kexue.fm/archives/5887)"
    assert published_text("ours", "mnist5k") == "94.46 Hungarian (VaDE README)"
    assert published_text("ours", "fashion_mnist") == "67.20 Hungarian (N2D, McConville et al. 2019)"
    assert published_text("ours", "digits") == "–"
    table = side_by_side(
        [
            {"preset": "su2018", "data": "mnist5k", "seeds": 3, "hungarian": 0.8, "majority": 0.81,
             "self_consistency": 0.95, "published": published_text("su2018", "mnist5k")},
            {"preset": "ours", "data": "mnist5k", "seeds": 5, "hungarian": 0.9, "majority": None,
             "self_consistency": 0.99, "published": "–"},
        ]
    )  # fmt: skip
    lines = table.splitlines()
    assert lines[0].startswith("| recipe | data | seeds | Hungarian % | majority % |")
    assert lines[2] == (
        "| author (`--preset su2018`) | mnist5k | 3 | 80.0 | 81.0 | 95.0 | 84.50 majority (kexue.fm/archives/5887) |"
    )
    assert lines[3] == "| ours (defaults) | mnist5k | 5 | 90.0 | – | 99.0 | – |"
    # a row without a published number takes the anchor; one with its own keeps it
    anchored = with_anchor(Figure("vae.fashion_mnist.acc_hungarian", 0.5, None, None, "kexue x"))
    assert anchored.published == 0.672 and "Hungarian" in anchored.source and anchored.command == "kexue x"
    own = Figure("vae.mnist5k.acc_majority", 0.5, 0.845, "Su", "kexue x")
    assert with_anchor(own) is own


def test_reproduce_section_runs_both_recipes(tmp_path, monkeypatch):
    """The quick section with two tiny arms: rows of both recipes, their self-consistency, the table."""
    from kexue.recipes.vae_cluster import preset_settings
    from kexue.reproduce import vae_cluster as section

    tiny = dict(epochs=1, batch_size=200, eval_every_epochs=0)
    arms = [
        section.Arm("su2018", "digits", "0", preset_settings("su2018", **tiny)),
        section.Arm(
            "ours", "digits", "0",
            VAEClusterConfig(pretrain_epochs=1, gmm_restarts=1, classifier_fit_steps=5, spectral_neighbors=0,
                             augment=False, consistency=0.0, **tiny),
        ),
    ]  # fmt: skip
    monkeypatch.setattr(section, "QUICK", arms)
    (tmp_path / "figures").mkdir()
    result = section.run(tmp_path, quick=True)
    keys = {f.key for f in result.figures}
    for prefix in ("vae.su2018.digits", "vae.digits"):
        assert {f"{prefix}.{m}" for m in METRICS} | {f"{prefix}.sample_self_consistency"} <= keys
    consistency = [f for f in result.figures if f.key.endswith("sample_self_consistency")]
    assert len(consistency) == 2  # one row per recipe: the study's mean over its seeds
    assert all(0 <= f.value <= 1 and f.command.startswith("kexue vae-cluster study ") for f in consistency)
    assert "| author (`--preset su2018`) | digits | 1 |" in result.notes
    assert "| ours (defaults) | digits | 1 |" in result.notes
    assert "majority-label" in result.notes and "Hungarian" in result.notes
    assert len(result.images) == 4 and all((tmp_path / p).is_file() for p in result.images)


def test_full_mode_runs_the_authors_length_and_five_seeds_of_ours():
    from kexue.recipes.vae_cluster import DEFAULT_SETTINGS
    from kexue.reproduce.vae_cluster import FULL

    arms = {(a.preset, a.data): a for a in FULL}
    assert arms["su2018", "mnist5k"].seeds == "0,1,2" and arms["su2018", "fashion_mnist"].seeds == "0"
    assert arms["ours", "mnist5k"].seeds == arms["ours", "fashion_mnist"].seeds == "0,1,2,3,4"
    # each preset's own settings (the author's 50 epochs), but Fashion-MNIST runs our shorter schedule
    assert all(a.settings is DEFAULT_SETTINGS for a in FULL if (a.preset, a.data) != ("ours", "fashion_mnist"))
    assert arms["ours", "fashion_mnist"].settings.pretrain_epochs < DEFAULT_SETTINGS.pretrain_epochs


# ---- the ablation script ---------------------------------------------------------------------------


def _script_commands(tmp_path, only="") -> list[list[str]]:
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "RUNS": str(tmp_path / "runs"),
        "RELEASE": str(tmp_path / "release"),
        "PRETRAIN": str(tmp_path / "pretrain"),
    }
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "vae_ablation.sh"), *([only] if only else [])],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split(": kexue ", 1)[1].split() for line in out.splitlines() if ": kexue " in line]


def test_ablation_script_commands_parse_and_set_their_lever(tmp_path, monkeypatch):
    """Every command of benchmarks/vae_ablation.sh goes through the real parser to the study recipe."""
    from kexue.commands import vae_cluster as commands

    seen = []

    def fake_study(data, seeds, out, results, settings, device, resume, overwrite, preset, pretrained, jobs=1):
        seen.append(dict(data=data, seeds=seeds, out=out, results=results, settings=settings, resume=resume,
                         preset=preset, pretrained=pretrained, jobs=jobs))  # fmt: skip
        return Path(out), {m: [0.5] for m in METRICS}

    monkeypatch.setattr(commands, "run_study", fake_study)
    lines = _script_commands(tmp_path)
    assert len(lines) == 28 and all(line[:2] == ["vae-cluster", "study"] for line in lines)
    for line in lines:
        main(line)
    runs = {Path(s["out"]).relative_to(tmp_path).as_posix().removeprefix("runs/"): s for s in seen}
    su = runs["su2018/fashion_mnist"]
    assert su["preset"] == "su2018" and su["settings"].epochs == 50 and su["settings"].pretrain_epochs == 0
    assert su["settings"].kl == "closed" and su["settings"].gmm_init is False
    assert runs["su2018/mnist5k"]["seeds"] == "0,1,2" and str(runs["su2018/mnist5k"]["results"]).endswith(
        "benchmarks/results/vae_cluster.json"
    )
    # the levers' base: our defaults as they were before the anchor (the winning lever) became one of them
    assert runs["ablation/base/mnist5k"]["settings"] == replace(DEFAULT_SETTINGS, seed=0, anchor=0.0)
    # final/: the anchor held (the default before its release); release*/: our recipe, from final/'s pre-training
    held = replace(DEFAULT_SETTINGS, seed=0, anchor_epochs=None)
    assert runs["final/mnist5k"]["settings"] == held and DEFAULT_SETTINGS.anchor == 10
    from kexue.reproduce.vae_cluster import FULL  # `reproduce --full` runs the script's Fashion-MNIST schedule

    fashion = next(a.settings for a in FULL if (a.preset, a.data) == ("ours", "fashion_mnist"))
    assert runs["final/fashion_mnist"]["settings"] == replace(fashion, seed=0, anchor_epochs=None)
    assert fashion.anchor_epochs is None and runs["final/fashion_mnist"]["results"] is not None  # held: ours there
    ours = {"mnist5k": runs["release/release10/mnist5k"], "fashion_mnist": runs["release/release3/fashion_mnist"]}
    assert ours["mnist5k"]["settings"] == replace(DEFAULT_SETTINGS, seed=0) and DEFAULT_SETTINGS.anchor_epochs == 10
    assert ours["fashion_mnist"]["settings"] == replace(fashion, seed=0, anchor_epochs=3)
    longer = runs["pretrain/pretrain40/fashion_mnist"]  # the final Fashion-MNIST recipe, 4x the pre-training
    assert longer["settings"] == replace(fashion, seed=0, pretrain_epochs=4 * fashion.pretrain_epochs)
    no_anchor = runs["release/no_anchor/mnist5k"]
    assert no_anchor["settings"] == replace(DEFAULT_SETTINGS, seed=0, anchor=0.0) and no_anchor["results"] is None
    for data, study in ours.items():
        assert study["pretrained"] == tmp_path / "runs" / "final" / data and study["jobs"] == 2
        assert study["seeds"] == "0,1,2,3,4"
    assert str(ours["mnist5k"]["results"]).endswith("benchmarks/results/vae_cluster.json")
    assert ours["fashion_mnist"]["results"] is None and runs["final/mnist5k"]["results"] is None
    for data in ("mnist5k", "fashion_mnist"):
        base = runs[f"ablation/base/{data}"]["settings"]
        assert base.manifold == "umap" and runs[f"ablation/spectral/{data}"]["settings"].manifold == "spectral"
        assert runs[f"ablation/short_pretrain/{data}"]["settings"].pretrain_epochs * 5 == base.pretrain_epochs
        assert runs[f"ablation/no_consistency/{data}"]["settings"].consistency == 0 and base.consistency > 0
        learned = runs[f"ablation/prior_learned/{data}"]["settings"]
        assert learned.prior == "learned" and learned.balance and base.prior == "unit"
        assert runs[f"ablation/self_training/{data}"]["settings"].self_training == 1.0 and base.self_training == 0
        assert runs[f"ablation/contrastive/{data}"]["settings"].contrastive == 1.0 and base.contrastive == 0
        assert runs[f"ablation/longer/{data}"]["settings"].epochs == 2 * base.epochs
        assert runs[f"ablation/restarts/{data}"]["settings"].gmm_restarts == 20
        # the levers after the pre-training share the base's; the others pre-train themselves
        assert runs[f"ablation/anchor/{data}"]["settings"].anchor == 10 and base.anchor == 0
        assert runs[f"ablation/anchor/{data}"]["settings"].anchor_epochs is None  # measured held
        levers = {Path(name).parent.name for name in runs if name.startswith("ablation/")} - {"anchor"}
        assert all(runs[f"ablation/{lever}/{data}"]["settings"].anchor == 0 for lever in levers)
        for lever in ("spectral", "no_consistency", "self_training", "restarts", "longer", "anchor"):
            assert runs[f"ablation/{lever}/{data}"]["pretrained"] == tmp_path / "runs" / "ablation" / "base" / data
            shared = runs[f"ablation/{lever}/{data}"]["settings"]
            assert all(getattr(shared, f) == getattr(base, f) for f in PRETRAIN_FIELDS)
        for lever in ("base", "short_pretrain", "contrastive", "prior_learned"):
            assert runs[f"ablation/{lever}/{data}"]["pretrained"] is None
        assert all(runs[f"ablation/{lever}/{data}"]["results"] is None for lever in ("base", "spectral", "longer"))
        assert runs[f"final/{data}"]["seeds"] == "0,1,2,3,4"
    assert not any(s["resume"] for s in seen)


def test_ablation_script_resumes_a_started_step_and_runs_one_group(tmp_path):
    (tmp_path / "runs" / "su2018" / "mnist5k").mkdir(parents=True)
    lines = _script_commands(tmp_path, "su2018")
    assert len(lines) == 2
    assert lines[0][-1] == "--resume" and "--resume" not in lines[1]


def test_collect_studies_keeps_each_lever_apart(tmp_path):
    from kexue.results import Figure, write_results

    for lever, value in (("base", 0.7), ("umap", 0.8)):
        write_results(
            tmp_path / "runs" / lever / "mnist5k" / "results.json",
            [Figure("vae.mnist5k.acc_hungarian", value, 0.9446, "VaDE", f"kexue vae-cluster study --{lever}")],
        )
    (tmp_path / "runs" / "longer" / "mnist5k").mkdir(parents=True)  # not finished: skipped
    results = tmp_path / "ablation.json"
    figures = collect_studies(tmp_path / "runs", results)
    rows = json.loads(results.read_text())
    assert [f.key for f in figures] == [
        "vae_ablation.base.mnist5k.acc_hungarian",
        "vae_ablation.umap.mnist5k.acc_hungarian",
    ]
    assert rows["vae_ablation.umap.mnist5k.acc_hungarian"] == {
        "value": 0.8, "published": 0.9446, "source": "VaDE", "command": "kexue vae-cluster study --umap"
    }  # fmt: skip
