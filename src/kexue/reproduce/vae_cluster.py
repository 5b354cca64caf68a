"""Reproduce section 1: the clustering VAE (kexue.fm/archives/5887), the author's recipe beside ours.

Two recipes, each trained by :func:`kexue.recipes.vae_cluster.run_study`: ``su2018`` (the author's 2018
code, ``--preset su2018``: no pre-training, zero-initialised μ_y, closed-form KL, λ 5) and ``ours`` (the
defaults: AE pre-training, a mixture initialisation, the label-free extensions).

quick: digits (8×8, 1,437 training images), one seed, a few epochs of each (about 2 minutes on 2 cores).
full: the author's 50 epochs on MNIST-5k (3 seeds) and Fashion-MNIST (1 seed), our defaults with 5 seeds
on both (hours on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kexue.data.images import load_images
from kexue.recipes.vae_cluster import (
    DEFAULT_SETTINGS,
    SELF_CONSISTENCY_PER_CLASS,
    VAEClusterConfig,
    key_prefix,
    load_model,
    plot_clusters,
    plot_samples,
    preset_settings,
    run_study,
    with_added_settings,
)
from kexue.reproduce.report import SectionResult
from kexue.results import Figure, load_results

# The published anchors and the metric each reports (value, source). Su's own figures are majority-label
# accuracy without pre-training; VaDE's, N2D's and DEC's are Hungarian accuracy with a pre-trained
# autoencoder. Rows that recipes.vae_cluster.PUBLISHED leaves empty take their anchor from here.
ANCHORS = {
    "vae.mnist5k.acc_hungarian": (0.9446, "VaDE README (Hungarian), full MNIST, pretrained AE"),
    "vae.fashion_mnist.acc_hungarian": (0.672, "N2D, McConville et al. 2019 (Hungarian), Fashion-MNIST"),
    "vae.su2018.mnist5k.acc_majority": (0.845, "kexue.fm/archives/5887 (majority-label), full MNIST"),
    "vae.su2018.fashion_mnist.acc_majority": (0.606, "kexue.fm/archives/5887 (majority-label), Fashion-MNIST"),
}
# Anchors with no row of their own (the notes quote them): name -> (metric, data, value in %).
OTHER_ANCHORS = (
    ("N2D (UMAP on AE codes + GMM)", "Hungarian", "MNIST test set (10k)", 94.8),
    ("DEC", "Hungarian", "full MNIST", 84.3),
)


@dataclass(frozen=True)
class Arm:
    """One recipe on one data set: ``run_study(data, seeds, settings=settings, preset=preset)``.

    ``settings`` is used as given; :data:`DEFAULT_SETTINGS` stands for the preset's own settings.
    """

    preset: str
    data: str
    seeds: str
    settings: VAEClusterConfig


FASHION_SETTINGS = VAEClusterConfig(pretrain_epochs=10, epochs=3, eval_every_epochs=1, anchor_epochs=None)
QUICK_EPOCHS = 20  # digits: 14 steps per epoch
QUICK = [
    Arm("su2018", "digits", "0", preset_settings("su2018", epochs=QUICK_EPOCHS)),
    # the anchor held, as in the committed quick report: the release is tuned to MNIST-5k's 30 VAE epochs, and on
    # these 20 epochs of digits it measured lower (one seed, `kexue reproduce --only vae --quick`, 2026-12-03)
    Arm("ours", "digits", "0", VAEClusterConfig(epochs=QUICK_EPOCHS, pretrain_epochs=QUICK_EPOCHS, anchor_epochs=None)),
]
FULL = [
    Arm("su2018", "mnist5k", "0,1,2", DEFAULT_SETTINGS),  # the author's 50 epochs
    Arm("su2018", "fashion_mnist", "0", DEFAULT_SETTINGS),
    Arm("ours", "mnist5k", "0,1,2,3,4", DEFAULT_SETTINGS),
    # Fashion-MNIST has 15x the images per epoch: a shorter schedule (benchmarks/vae_ablation.sh, FMNIST), the
    # anchor held (released over its 3 epochs measured lower: docs/vae_cluster.md, "Releasing the anchor")
    Arm("ours", "fashion_mnist", "0,1,2,3,4", FASHION_SETTINGS),
]
RECIPE_NAMES = {"su2018": "author (`--preset su2018`)", "ours": "ours (defaults)"}


def _release(cfg: VAEClusterConfig) -> str:
    """How the anchor's weight moves over the VAE phase, for the report's notes ('' when it is off)."""
    if not cfg.anchor or not cfg.gmm_init:
        return ""
    return " held" if cfg.anchor_epochs is None else f" released over the first {cfg.anchor_epochs} epochs"


def with_anchor(figure: Figure) -> Figure:
    """``figure`` with its published anchor from :data:`ANCHORS` when it has none."""
    if figure.published is not None or figure.key not in ANCHORS:
        return figure
    published, source = ANCHORS[figure.key]
    return Figure(figure.key, figure.value, published, source, figure.command)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def side_by_side(rows: list[dict]) -> str:
    """The markdown table of the two recipes, one row per (recipe, data set).

    ``rows``: dicts with ``preset``, ``data``, ``seeds`` (count), ``hungarian``, ``majority``,
    ``self_consistency`` (fractions) and ``published`` (text: the anchors for that data set and their
    metric, or ``–``). Example row: ``| author (--preset su2018) | mnist5k | 3 | 80.1 | 84.0 | 97.0 | ≈ 84.5
    majority (Su 2018) |``.
    """
    lines = [
        "| recipe | data | seeds | Hungarian % | majority % | samples assigned back % | published (metric) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {RECIPE_NAMES.get(r['preset'], r['preset'])} | {r['data']} | {r['seeds']} | {_pct(r['hungarian'])} "
            f"| {_pct(r['majority'])} | {_pct(r['self_consistency'])} | {r['published']} |"
        )
    return "\n".join(lines)


def published_text(preset: str, data: str) -> str:
    """The anchors that a (recipe, data set) row stands beside, each with its metric."""
    texts = []
    for metric, label in (("acc_majority", "majority"), ("acc_hungarian", "Hungarian")):
        anchor = ANCHORS.get(f"{key_prefix(preset, data)}.{metric}")
        if anchor:
            texts.append(f"{100 * anchor[0]:.2f} {label} ({anchor[1].split(' (')[0]})")
    return "; ".join(texts) or "–"


def run(out: Path, quick: bool = True) -> SectionResult:
    arms = QUICK if quick else FULL
    section = SectionResult(
        "vae",
        "1. Clustering VAE with a Gaussian-mixture prior (kexue.fm/archives/5887)",
        headline=["vae.*.acc_hungarian", "vae.*.acc_majority"],
    )
    rows, notes = [], []
    for arm in arms:
        folder, per_seed = run_study(
            arm.data, arm.seeds, out / "vae" / arm.preset / arm.data, settings=arm.settings, preset=arm.preset
        )
        section.figures += [
            with_anchor(Figure(k, v["value"], v["published"], v["source"], v["command"]))
            for k, v in load_results(folder / "results.json").items()
        ]
        first = folder / f"seed-{arm.seeds.split(',')[0]}"
        model, meta = load_model(first)  # the first seed's model draws the grids
        # the study's vae.<data>.sample_self_consistency: each seed's samples assigned back, label-free
        consistency = sum(per_seed["sample_self_consistency"]) / len(per_seed["sample_self_consistency"])
        images = load_images(arm.data)
        stem = f"vae_{arm.preset}_{arm.data}"
        grids = (
            plot_clusters(model, images.test_x, out / "figures" / f"{stem}_clusters.png"),
            plot_samples(model, out / "figures" / f"{stem}_samples.png"),
        )
        section.images += [str(path.relative_to(out)) for path in grids]
        n = len(per_seed["acc_hungarian"])
        rows.append(
            {
                "preset": arm.preset,
                "data": arm.data,
                "seeds": n,
                "hungarian": sum(per_seed["acc_hungarian"]) / n,
                "majority": sum(per_seed["acc_majority"]) / n,
                "self_consistency": consistency,
                "published": published_text(arm.preset, arm.data),
            }
        )
        cfg = VAEClusterConfig(**with_added_settings(meta["config"]))  # the settings the study used
        init = per_seed.get("init_acc_hungarian", [])
        after_init = f"; {sum(init) / len(init):.1%} Hungarian right after the initialisation" if init else ""
        notes.append(
            f"- **{RECIPE_NAMES[arm.preset]}, {arm.data}**: {cfg.pretrain_epochs} epochs of AE pre-training, "
            f"{'a mixture initialisation' if cfg.gmm_init else 'μ_y zero-initialised'}, {cfg.epochs} VAE epochs, "
            f"`kl={cfg.kl}`, λ={cfg.recon_weight:g}, prior {cfg.prior}, "
            f"anchor {cfg.anchor:g}{_release(cfg)}{after_init}."
        )
    others = "; ".join(f"{name} {value} % {metric}, {data}" for name, metric, data, value in OTHER_ANCHORS)
    notes += [
        "",
        side_by_side(rows),
        "",
        "- Metrics: Su reports **majority-label** accuracy (each cluster takes its most frequent label) without "
        "pre-training; VaDE, N2D and DEC report **Hungarian** accuracy (the best one-to-one map) with a "
        f"pre-trained autoencoder. Other anchors: {others}. Published figures are on full MNIST (60k) or "
        "Fashion-MNIST; MNIST-5k trains on 4,000 images and tests on 1,000 held-out ones.",
        f"- *Samples assigned back*: of {SELF_CONSISTENCY_PER_CLASS} images drawn per class, z ~ q(z|y) and x = G(z), "
        "the share that the model clusters into the class they were drawn from (label-free; mean over the seeds).",
        "- Targets of our recipe (issue 15): MNIST-5k ≥ 94.5 %, Fashion-MNIST ≥ 65 % Hungarian, mean of 5 seeds.",
    ]
    if quick:
        notes.append(
            f"- Quick mode: digits (8×8; no published figure), one seed, {QUICK_EPOCHS} epochs of each recipe "
            "(ours: also "
            f"{QUICK_EPOCHS} epochs of pre-training) — it shows the two recipes run, not their published accuracy; "
            "`kexue reproduce --only vae --full` trains the author's 50 epochs (MNIST-5k 3 seeds, Fashion-MNIST "
            "1 seed) and our defaults (5 seeds each)."
        )
    section.notes = "\n".join(notes)
    return section
