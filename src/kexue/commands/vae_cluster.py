"""``kexue vae-cluster train / eval / sample / study``: the clustering VAE of article 1 (archives/5887).

Thin entry points: the parser enforces the types below, :mod:`kexue.recipes.vae_cluster` checks
the rest and does the work, these functions print the outcome.
"""

from __future__ import annotations

from pathlib import Path

from kexue.params import Device, NonNegativeInt, PositiveInt
from kexue.recipes.vae_cluster import (
    DEFAULT_SETTINGS,
    METRICS,
    Preset,
    VAEClusterConfig,
    evaluate_run,
    run_self_consistency,
    run_study,
    sample_run,
    seed_summary,
    train_run,
)


def train(
    data: str = "mnist5k",
    out: Path | None = None,
    settings: VAEClusterConfig = DEFAULT_SETTINGS,
    device: Device = "auto",
    resume: bool = False,
    overwrite: bool = False,
    preset: Preset = "ours",
    pretrained: Path | None = None,
) -> dict:
    """Train the clustering VAE (labels are never used for training) and evaluate it on the test split.

    Args:
        data: digits, mnist5k, fashion_mnist, an IDX folder or an .npz file.
        out: run folder (default runs/vae-cluster-train-<time>/).
        settings: model and training settings (--settings.epochs 50, --settings.kl closed, ...).
        device: auto, cpu, cuda or cuda:N.
        resume: continue from the checkpoints in --out (--settings.epochs and --settings.lr may change).
        overwrite: replace the run in a non-empty --out.
        preset: ours (our label-free recipe, the defaults) or su2018 (the author's 2018 code: no
            pre-training, zero-initialised class means, closed-form KL, λ 5, 50 epochs); --settings.*
            flags that differ from our defaults go on top.
        pretrained: start from the finished autoencoder pre-training of this run folder (same data,
            seed and pre-training settings) instead of pre-training again: runs that differ only
            after the pre-training (the VAE phase's levers) share one.
    """
    run, record = train_run(data, out, settings, str(device), resume, overwrite, preset, pretrained)
    return _print_scores(record, run)


def evaluate(run: Path, data: str | None = None, device: Device = "cpu") -> dict:
    """Evaluate a trained run on a test split: Hungarian and majority accuracy, NMI, ARI.

    Scores on the run's own data set go to ``RUN/eval.json``, on any other data set to
    ``RUN/eval-<data>.json``.

    Args:
        run: the run folder written by `kexue vae-cluster train`.
        data: data set to evaluate on (default: the one it was trained on).
        device: cpu, cuda, cuda:N or auto.
    """
    path, record = evaluate_run(run, data, str(device))
    scores = _print_scores(record, Path(run))
    print(f"class-conditional samples assigned back to their own cluster: {record['sample_self_consistency']:.1%}")
    print(f"wrote {path}")
    return scores


def sample(
    run: Path, out: Path | None = None, per_class: PositiveInt = 10, seed: NonNegativeInt = 0, data: str | None = None
) -> list[str]:
    """Write PNG grids: real members of each cluster and class-conditional samples z ~ N(μ_y, I).

    Also prints the share of the sampled images that the model assigns back to the class they were
    drawn from (a label-free check of class-conditional generation).

    Args:
        run: the run folder written by `kexue vae-cluster train`.
        out: folder for the PNGs (default: the run folder).
        per_class: images per row (at most 100).
        seed: seed of the sampled z.
        data: data set whose test images fill the cluster grid (default: the training one).
    """
    paths = sample_run(run, out, per_class, seed, data)
    for p in paths:
        print(f"wrote {p}")
    score = run_self_consistency(run, per_class, seed)  # the images of samples.png, clustered by the model
    print(f"samples.png: {score:.1%} of the {per_class} samples per class are assigned back to their own cluster")
    return [str(p) for p in paths]


def study(
    data: str = "mnist5k",
    seeds: str = "0,1,2,3,4",
    out: Path | None = None,
    results: Path | None = None,
    settings: VAEClusterConfig = DEFAULT_SETTINGS,
    device: Device = "auto",
    resume: bool = False,
    overwrite: bool = False,
    preset: Preset = "ours",
    pretrained: Path | None = None,
    jobs: PositiveInt = 1,
) -> dict:
    """Train and evaluate several seeds; report mean ± std and best.

    Args:
        data: digits, mnist5k, fashion_mnist, an IDX folder or an .npz file.
        seeds: comma-separated seeds.
        out: study folder (default runs/vae-cluster-study-<time>/); one sub-folder per seed.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/vae_cluster.json).
        settings: model and training settings shared by all seeds (--settings.epochs 50, ...).
        device: auto, cpu, cuda or cuda:N.
        resume: continue the study in --out: finished seeds are read back, unfinished ones resume
            from their checkpoints, the others start (--seeds may name more seeds than before).
        overwrite: replace the study in a non-empty --out.
        preset: ours (the defaults) or su2018 (the author's 2018 settings); --settings.* flags that
            differ from our defaults go on top.
        pretrained: an earlier study folder (or run folder) whose finished pre-training each seed
            starts from (its seed-<s>/; same data and pre-training settings) instead of pre-training
            again: studies that differ only after the pre-training share one.
        jobs: seeds trained at once, each in its own process with its share of the torch threads
            (1: one after the other, with progress bars); each seed gets the result it would get
            alone on that many threads.
    """
    folder, per_seed = run_study(
        data, seeds, out, results, settings, str(device), resume, overwrite, preset, pretrained, jobs
    )
    for metric in METRICS:
        s = seed_summary(per_seed[metric])
        print(f"{data} {metric}: {s['mean']:.4f} ± {s['std']:.4f} (best {s['best']:.4f}, {s['n']} seeds)")
    print(f"study folder: {folder}")
    return per_seed


def _print_scores(record: dict, run: Path) -> dict[str, float]:
    """Print an eval.json record; returns its scores (without the data set's name)."""
    print(
        f"{record['data']} test: Hungarian acc {record['acc_hungarian']:.4f}  majority acc "
        f"{record['acc_majority']:.4f}  NMI {record['nmi']:.4f}  ARI {record['ari']:.4f}  "
        f"largest cluster {record['largest_cluster_share']:.1%}"
    )
    print(f"run folder: {run}")
    return {k: v for k, v in record.items() if k != "data"}
