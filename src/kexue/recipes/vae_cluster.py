"""Article 1, the clustering VAE (kexue.fm/archives/5887): train, evaluate, study seeds, plot.

The recipe, all unsupervised (labels only score):

1. autoencoder pre-training of the encoder mean and decoder (``pretrain_epochs``);
2. mixture initialisation (:func:`gmm_initialise`): a K-component Gaussian mixture on μ(x) (or on a
   spectral embedding of their k-NN graph), the best of ``gmm_restarts`` by likelihood; the latent
   space is rescaled so the mixture's within-class spread matches the prior's unit variance, μ_y
   take the mixture means and the classifier is fitted to the mixture's responsibilities;
3. the VAE loss of archives/5887 through the shared :func:`kexue.training.fit`.

Example::

    from kexue.data.images import load_images
    from kexue.recipes.vae_cluster import VAEClusterConfig, evaluate_model, train_cluster_vae

    images = load_images("mnist5k")
    model = train_cluster_vae(images, VAEClusterConfig(epochs=5, pretrain_epochs=5))
    evaluate_model(model, images.test_x, images.test_y)   # {'acc_hungarian': ..., 'nmi': ...}

A run folder (:func:`train_run`, ``kexue vae-cluster train``) holds ``config.yaml`` (``--config
RUN/config.yaml`` reruns it), ``pretrain/`` and ``vae/`` (metrics.jsonl, checkpoints), ``init.json``
(the scores right after the mixture initialisation), ``model.safetensors`` + ``model.json``,
``eval.json`` (test scores on the training data set), ``eval-<data>.json`` (scores on another data
set) and ``results.json``. A study folder (:func:`run_study`) holds one run folder per seed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from kexue.analysis.clustering import cluster_sizes, clustering_scores
from kexue.data.images import ImageSet, load_images, random_affine
from kexue.errors import KexueError
from kexue.io import (
    RESUME_MAY_CHANGE,
    check_output_dir,
    make_run_dir,
    read_json,
    register_added_settings,
    run_config,
    save_figure,
    with_added_defaults,
    write_json,
    write_text,
)
from kexue.models.vae_cluster import (
    ClusterVAE,
    autoencoder_loss,
    cluster_probs,
    cluster_vae_loss,
    contrastive_autoencoder_loss,
)
from kexue.params import (
    AtLeastTwo,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check,
    resolve_device,
)
from kexue.provenance import command_line
from kexue.results import Figure, check_results_file, load_results, write_results
from kexue.training import TensorBatches, TrainConfig, fit
from kexue.training import distributed as dist
from kexue.training.checkpoint import latest_checkpoint, load_weights, read_tensors, save_weights

# (value, source) of the published numbers we stand beside (other settings: see docs/vae_cluster.md)
PUBLISHED = {
    ("mnist5k", "acc_hungarian"): (0.9446, "VaDE README, full MNIST, pretrained AE"),
    ("mnist5k", "acc_majority"): (0.845, "kexue.fm/archives/5887 (2018), full MNIST"),
    ("fashion_mnist", "acc_majority"): (0.606, "kexue.fm/archives/5887 (2018)"),
    ("su2018.mnist5k", "acc_majority"): (0.845, "kexue.fm/archives/5887 (2018), full MNIST, the author's code"),
    ("su2018.fashion_mnist", "acc_majority"): (0.606, "kexue.fm/archives/5887 (2018), the author's code"),
}
METRICS = ("acc_hungarian", "acc_majority", "nmi", "ari")
TRAIN_COMMAND = "vae-cluster-train"  # the command named in a run folder's config.yaml
STUDY_COMMAND = "vae-cluster-study"
for _command in (TRAIN_COMMAND, STUDY_COMMAND):  # runs made before these settings existed resume unchanged
    register_added_settings(
        _command,
        {
            "settings.prior": "unit",
            "settings.self_training": 0.0,
            "settings.manifold": "spectral",
            "settings.contrastive": 0.0,
            "settings.init": "torch",
            "settings.anchor": 0.0,
            "settings.anchor_epochs": None,
        },
    )
GMM_MAX_POINTS = 20000  # images entering the mixture initialisation (a seeded subset beyond this)
MAX_PER_CLASS = 100  # images per row of a PNG grid
SELF_CONSISTENCY_PER_CLASS = 100  # samples per class that `eval` assigns back (sample_self_consistency)


@dataclass
class VAEClusterConfig:
    """Settings of one clustering-VAE run.

    The defaults are our best label-free recipe; the author's setting (archives/5887) is
    ``pretrain_epochs=0, gmm_init=False, augment=False, consistency=0, balance=True,
    batch_balance=0, spectral_neighbors=0, anchor=0`` (the preset ``su2018``).

    Attributes:
        epochs: VAE training epochs (ours: 30; author: 50).
        batch_size: images per step (author: 100); at most the number of training images.
        lr: Adam learning rate (author: 1e-3).
        latent_dim: size d of z (author: 20).
        num_classes: K >= 2, the number of clusters (author: 10).
        kl: 'sampled' (Su's revision) or 'closed' (2018 code).
        recon_weight: λ > 0 on the squared error (2.5 revision, 5 in 2018).
        balance: include KL(p(y|z) || q(y)) (Su: optional).
        batch_balance: weight of KL(batch-mean p(y|z) || uniform), an extension (0 = off).
        pretrain_epochs: autoencoder pre-training epochs (ours: 100; 0 = none, as the author).
        gmm_init: initialise μ_y and the classifier from a Gaussian mixture on the codes.
        gmm_restarts: mixture restarts (>= 1); the best by likelihood (unsupervised) is kept.
        classifier_fit_steps: steps fitting p(y|z) to the mixture's responsibilities.
        spectral_neighbors: fit the mixture on a spectral embedding of the k-NN graph of the
            codes (0 = on the codes themselves), an extension; below the number of training images.
        consistency: weight of the augmentation-consistency term, an extension (0 = off).
        augment: train on randomly shifted, rotated and scaled images.
        backbone: auto (conv for 28×28, MLP otherwise), conv (28×28 only) or mlp.
        seed: random seed (>= 0).
        eval_every_epochs: log test-set scores every N epochs (labels score only; 0 = at the end).
        prior: unit (Su: q(z|y) = N(μ_y, I), uniform q(y)) or learned (VaDE's prior: a learnable
            diagonal variance per class and learnable mixing weights, initialised from the mixture;
            needs balance, the term through which q(y) enters the loss).
        self_training: weight of DEC's self-training term KL(sharpened p(y|x) || p(y|z)), an
            extension (0 = off).
        manifold: the embedding of the k-NN graph the mixture is fitted on when spectral_neighbors
            > 0: umap (ours: UMAP as N2D does; needs umap-learn, the extra ``umap``) or spectral
            (scikit-learn's SpectralEmbedding).
        init: the layers' initial weights: torch (PyTorch's defaults) or keras (Glorot-uniform
            weights and zero biases, Keras's defaults, which the author's code ran with).
        contrastive: weight of a contrastive term in the autoencoder pre-training (an extension):
            NT-Xent between the codes μ of two random views of each image, so that the codes the
            mixture is fitted on ignore shifts, rotations and scaling (0 = off; needs pre-training).
        anchor: weight of the cross-entropy of p(y|z) against the initial partition, an extension: each
            training image's cluster probabilities right after the mixture initialisation, kept fixed, so
            the VAE reshapes its latent space around the partition the embedding found instead of
            replacing it by its prior's nearest-mean partition (ours: 10, the ablation's winner; 0 = off,
            as before 2026-12-02). Unused without gmm_init, which makes that partition (like manifold).
        anchor_epochs: release the anchor: its weight falls linearly from ``anchor`` to 0 over the first
            N VAE epochs (and stays 0 after), so the VAE holds the initial partition early and may improve
            it later (ours: 10, a third of the 30 VAE epochs, the 5-seed studies' winner on MNIST-5k);
            None: held at ``anchor`` for the whole VAE phase (the default before 2026-12-03; Fashion-MNIST's
            3-epoch recipe keeps it, where a release over the 3 epochs measured 0.3 points lower).
    Example: ``VAEClusterConfig(epochs=5, kl="closed")``.
    """

    epochs: PositiveInt = 30
    batch_size: PositiveInt = 100
    lr: PositiveFloat = 1e-3
    latent_dim: PositiveInt = 20
    num_classes: AtLeastTwo = 10
    kl: Literal["sampled", "closed"] = "sampled"
    recon_weight: PositiveFloat = 2.5
    balance: bool = False
    batch_balance: NonNegativeFloat = 1.0
    pretrain_epochs: NonNegativeInt = 100
    gmm_init: bool = True
    gmm_restarts: PositiveInt = 5
    classifier_fit_steps: NonNegativeInt = 300
    spectral_neighbors: NonNegativeInt = 20
    consistency: NonNegativeFloat = 10.0
    augment: bool = True
    backbone: Literal["auto", "conv", "mlp"] = "auto"
    seed: NonNegativeInt = 0
    eval_every_epochs: NonNegativeInt = 5
    prior: Literal["unit", "learned"] = "unit"
    self_training: NonNegativeFloat = 0.0
    manifold: Literal["spectral", "umap"] = "umap"
    contrastive: NonNegativeFloat = 0.0
    init: Literal["torch", "keras"] = "torch"
    anchor_epochs: PositiveInt | None = 10
    anchor: NonNegativeFloat = 10.0  # the last field: benchmarks/pin_default.py places it there

    def __post_init__(self) -> None:
        # The parser enforces the annotations on the command line; these checks are for Python
        # callers. Values become plain int/float/str (the parser hands in subclasses of them).
        least = {
            "epochs": 1,
            "batch_size": 1,
            "latent_dim": 1,
            "num_classes": 2,
            "pretrain_epochs": 0,
            "gmm_restarts": 1,
            "classifier_fit_steps": 0,
            "spectral_neighbors": 0,
            "seed": 0,
            "eval_every_epochs": 0,
        }
        for name, low in least.items():
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                f"settings.{name} must be an integer >= {low}, got {value!r}",
            )
            setattr(self, name, int(value))
        check(
            self.anchor_epochs is None
            or (
                isinstance(self.anchor_epochs, int)
                and not isinstance(self.anchor_epochs, bool)
                and self.anchor_epochs >= 1
            ),
            f"settings.anchor_epochs must be an integer >= 1 or None, got {self.anchor_epochs!r}",
        )
        numbers = (("lr", True), ("recon_weight", True), ("batch_balance", False), ("consistency", False))
        for name, positive in numbers + (("self_training", False), ("contrastive", False), ("anchor", False)):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            check(
                number and (value > 0 if positive else value >= 0),
                f"settings.{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}",
            )
            setattr(self, name, float(value))
        for name in ("balance", "gmm_init", "augment"):
            check(isinstance(getattr(self, name), bool), f"settings.{name} must be true or false")
        check(self.kl in ("sampled", "closed"), f"settings.kl must be 'sampled' or 'closed', got {self.kl!r}")
        check(
            self.backbone in ("auto", "conv", "mlp"),
            f"settings.backbone must be auto, conv or mlp, got {self.backbone!r}",
        )
        check(self.prior in ("unit", "learned"), f"settings.prior must be unit or learned, got {self.prior!r}")
        check(
            self.prior == "unit" or self.balance,
            "--settings.prior learned learns the mixing weights q(y) through the balance term KL(p(y|z) || q(y)): "
            "add --settings.balance true",
        )
        check(
            self.manifold in ("spectral", "umap"), f"settings.manifold must be spectral or umap, got {self.manifold!r}"
        )
        check(self.init in ("torch", "keras"), f"settings.init must be torch or keras, got {self.init!r}")
        check(
            not self.contrastive or self.pretrain_epochs > 0,
            "--settings.contrastive weighs a term of the autoencoder pre-training: set --settings.pretrain_epochs > 0",
        )
        self.kl, self.backbone, self.prior, self.manifold, self.init = (
            str(self.kl),
            str(self.backbone),
            str(self.prior),
            str(self.manifold),
            str(self.init),
        )


DEFAULT_SETTINGS = VAEClusterConfig()  # the signatures' default (one shared, never changed)
Preset = Literal["ours", "su2018"]
PRESETS: dict[str, VAEClusterConfig] = {
    "ours": DEFAULT_SETTINGS,
    # the author's 2018 code (bojone/vae, METHODS.md §1): no pre-training, μ_y zero-initialised, closed-form
    # KL, λ = 5, the balance term on, conv architecture for 28×28, Adam 1e-3, batch 100, 50 epochs
    "su2018": VAEClusterConfig(
        epochs=50,
        batch_size=100,
        lr=1e-3,
        latent_dim=20,
        num_classes=10,
        kl="closed",
        recon_weight=5.0,
        balance=True,
        batch_balance=0.0,
        pretrain_epochs=0,
        gmm_init=False,
        spectral_neighbors=0,
        consistency=0.0,
        augment=False,
        prior="unit",
        self_training=0.0,
        contrastive=0.0,
        manifold="spectral",  # unused without a mixture initialisation; kept as the runs made before umap
        anchor=0.0,  # no initial partition to hold
    ),
}


def check_preset(preset: str) -> None:
    """A KexueError naming ``--preset`` unless ``preset`` is one of :data:`PRESETS`."""
    check(preset in PRESETS, f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")


def preset_settings(preset: str, **overrides) -> VAEClusterConfig:
    """The settings of a named preset with ``overrides`` on top: ``preset_settings("su2018", epochs=5)``."""
    check_preset(preset)
    return replace(PRESETS[preset], **overrides)


def preset_arguments(preset: str) -> list[str]:
    """``--settings.<field> <value>`` flags that turn our defaults into ``preset``'s settings.

    The CLI puts them before the user's own flags, so ``--preset su2018 --settings.pretrain_epochs
    30`` is the author's setting with pre-training on top (later flags win), and the run's
    config.yaml records the settings actually used. An unknown preset gives no flags (the parser
    then refuses the value).
    """
    if preset not in PRESETS:
        return []
    flags = []
    for f in fields(VAEClusterConfig):
        value = getattr(PRESETS[preset], f.name)
        if value != getattr(DEFAULT_SETTINGS, f.name):
            flags += [f"--settings.{f.name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def key_prefix(preset: str, data: str) -> str:
    """``vae.<data>`` for our recipe, ``vae.<preset>.<data>`` for another preset."""
    return f"vae.{data}" if preset == "ours" else f"vae.{preset}.{data}"


def check_settings(cfg: VAEClusterConfig, images: ImageSet) -> None:
    """The rules of ``cfg`` that depend on the data, checked before any run folder or training.

    Raises KexueError naming the ``--settings`` flag when the conv backbone meets images that are
    not 28×28, a batch is larger than the training set, or the mixture initialisation cannot be
    fitted (as many clusters or spectral neighbours as images).
    """
    n, (h, w) = len(images.train_x), images.image_size
    points = min(n, GMM_MAX_POINTS)
    check(
        cfg.backbone != "conv" or (h, w) == (28, 28),
        f"--settings.backbone conv needs 28×28 images, {images.name} has {h}×{w}; use --settings.backbone mlp",
    )
    check(
        cfg.batch_size <= n, f"--settings.batch_size {cfg.batch_size} exceeds the {n} training images of {images.name}"
    )
    check(
        not cfg.gmm_init or cfg.num_classes < points,
        f"--settings.num_classes {cfg.num_classes}: the mixture initialisation needs more training images "
        f"than clusters ({images.name} has {n})",
    )
    check(
        cfg.spectral_neighbors < points,
        f"--settings.spectral_neighbors {cfg.spectral_neighbors} must be below the number of training images "
        f"entering the mixture initialisation ({points})",
    )
    check(
        not (cfg.gmm_init and cfg.spectral_neighbors and cfg.manifold == "umap") or importlib.util.find_spec("umap"),
        "--settings.manifold umap (our default) needs umap-learn: pip install 'kexue[umap]', "
        "or pass --settings.manifold spectral",
    )


# ---- the recipe: pre-train -> initialise -> train --------------------------------------------


@torch.no_grad()
def gmm_initialise(
    model: ClusterVAE,
    x: torch.Tensor,
    restarts: int,
    seed: int,
    fit_steps: int,
    lr: float = 1e-3,
    spectral_neighbors: int = 0,
    max_points: int = GMM_MAX_POINTS,
    manifold: str = "spectral",
) -> dict[str, float]:
    """Initialise μ_y and p(y|z) from a Gaussian mixture on the codes μ(x) (no labels).

    The mixture is fitted on μ(x) itself, or, with ``spectral_neighbors`` > 0, on a spectral
    embedding of the k-nearest-neighbour graph of μ(x) (it follows the data manifold; an
    extension, not in the sources). The latent space is rescaled so that the clusters'
    within-class spread matches the prior's unit variance (an exact reparameterisation of the
    autoencoder), μ_y become the responsibility-weighted cluster means, and the classifier is
    fitted to the responsibilities. At most ``max_points`` images (a seeded random subset) enter
    the mixture, which bounds the cost of the spectral embedding on large data sets.

    Returns ``{"latent_scale": s, "gmm_log_likelihood": ...}``. Example:
    ``gmm_initialise(model, images.train_x, restarts=5, seed=0, fit_steps=300, spectral_neighbors=20)``.
    """
    from sklearn.mixture import GaussianMixture

    device = next(model.parameters()).device
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]]
    codes = model.embed(x.to(device)).cpu().double()  # (N, d)
    features = codes.numpy()
    if spectral_neighbors:
        features = manifold_embedding(features, model.num_classes, spectral_neighbors, seed, manifold)
    features = np.asarray(features, dtype=np.float64)  # UMAP returns float32; the responsibilities meet float64 codes
    features = features / features.std()  # one global scale, so reg_covar means the same everywhere
    gmm = GaussianMixture(
        model.num_classes,
        covariance_type="full" if spectral_neighbors else "diag",
        n_init=restarts,
        random_state=seed,
        reg_covar=1e-4,
    ).fit(features)
    resp = torch.as_tensor(gmm.predict_proba(features), dtype=torch.float64)  # (N, K) soft assignments
    weights = resp / resp.sum(0, keepdim=True).clamp_min(1e-12)
    means = weights.T @ codes  # (K, d)
    spread = (resp.unsqueeze(-1) * (codes.unsqueeze(1) - means.unsqueeze(0)).pow(2)).sum((0, 1)) / len(codes)
    scale = float(spread.mean().sqrt())  # within-class std of μ(x)
    if not (math.isfinite(scale) and scale > 0):
        raise KexueError(
            f"the mixture initialisation found codes without spread (scale {scale}); are the "
            "training images all alike? Try --settings.gmm_init false"
        )
    # Exact reparameterisation: μ'(x) = μ(x)/s and G'(z') = G(s·z'), so the AE is unchanged.
    enc_out: torch.nn.Linear = model.encoder[-1]
    d = model.latent_dim
    enc_out.weight[:d] /= scale
    enc_out.bias[:d] /= scale
    dec_in: torch.nn.Linear = model.decoder[0]
    dec_in.weight *= scale
    model.class_means.copy_((means / scale).to(model.class_means.dtype))
    if model.prior == "learned":  # VaDE initialises the whole prior from the mixture: σ_y² and π too
        per_class = (weights.unsqueeze(-1) * (codes.unsqueeze(1) - means.unsqueeze(0)).pow(2)).sum(0)  # (K, d)
        model.class_logvar.copy_((per_class / scale**2).clamp_min(1e-4).log().to(model.class_logvar.dtype))
        model.prior_logits.copy_(resp.mean(0).clamp_min(1e-6).log().to(model.prior_logits.dtype))
    resp = resp.float()
    with torch.enable_grad():
        opt = torch.optim.Adam(model.classifier.parameters(), lr=lr)
        z_all = (codes / scale).float().to(device)
        g = torch.Generator().manual_seed(seed)
        for _ in range(fit_steps):
            idx = torch.randint(len(z_all), (256,), generator=g)
            zb = z_all[idx] + 0.5 * torch.randn(len(idx), d, generator=g).to(device)
            loss = -(resp[idx].to(device) * F.log_softmax(model.classifier(zb), -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"latent_scale": scale, "gmm_log_likelihood": float(gmm.score(features))}


def _numba_single_threaded() -> None:
    """Give numba (UMAP's engine) a pool of one thread, unless numba is loaded already or the user chose.

    UMAP with a ``random_state`` runs on one thread anyway, but numba starts its OpenMP pool of one
    thread per core on first use, and that pool's idle workers stay busy-waiting for the rest of the
    process: the VAE phase after the mixture initialisation then ran 7 to 10 times slower on this 2-core
    CPU whenever another job shared it (measured: 38 instead of 396 conv steps in 4 s). numba reads
    ``NUMBA_NUM_THREADS`` once, when it is first imported.
    """
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def manifold_embedding(features, dims: int, neighbors: int, seed: int, manifold: str = "spectral"):
    """``features`` (N, d) -> (N, dims): an embedding of their ``neighbors``-NN graph.

    ``spectral``: scikit-learn's SpectralEmbedding; ``umap``: UMAP with N2D's settings (McConville
    et al. 2019: min_dist 0, as many dimensions as clusters), from umap-learn (extra ``umap``).
    """
    if manifold == "umap":
        _numba_single_threaded()
        try:
            import umap
        except ImportError:
            raise KexueError("--settings.manifold umap needs umap-learn (pip install 'kexue[umap]')") from None
        reducer = umap.UMAP(n_components=dims, n_neighbors=neighbors, min_dist=0.0, random_state=seed)
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": seeded on purpose
            warnings.simplefilter("ignore", UserWarning)
            return reducer.fit_transform(features)
    from sklearn.manifold import SpectralEmbedding

    return SpectralEmbedding(
        n_components=dims, affinity="nearest_neighbors", n_neighbors=neighbors, random_state=seed
    ).fit_transform(features)


def _phase_has_checkpoint(phase_dir: Path | None) -> bool:
    return (
        phase_dir is not None
        and (phase_dir / "checkpoints").is_dir()
        and latest_checkpoint(phase_dir / "checkpoints") is not None
    )


def has_checkpoint(run: Path) -> bool:
    """Whether a run folder holds a checkpoint of either phase (something ``resume`` continues)."""
    return _phase_has_checkpoint(Path(run) / "pretrain") or _phase_has_checkpoint(Path(run) / "vae")


# the settings that shape the autoencoder pre-training: a run may start from another run's pre-training
# (``pretrained``) only when these, the data set, the device type and the number of processes are the same
PRETRAIN_FIELDS = ("pretrain_epochs", "batch_size", "lr", "latent_dim", "num_classes", "backbone", "init", "augment",
                   "contrastive", "seed", "prior")  # fmt: skip
PRETRAIN_RECORD = "settings.json"  # in pretrain/: what the pre-training actually ran with


def _pretrain_record(cfg: VAEClusterConfig, device: torch.device) -> dict:
    """The facts that decide a pre-training's weights: :data:`PRETRAIN_FIELDS`, device type, processes."""
    return {**{k: getattr(cfg, k) for k in PRETRAIN_FIELDS}, "device": device.type, "processes": dist.world_size()}


def with_added_settings(settings: dict) -> dict:
    """A train run's saved ``settings`` with every setting added since at the default it had before."""
    return with_added_defaults(TRAIN_COMMAND, {"settings": settings})["settings"]


def pretrained_source(path: Path, seed: int) -> Path:
    """The run folder a run of ``seed`` takes its pre-training from: ``path/seed-<seed>`` when ``path`` is
    a study folder, else ``path`` itself (a ``kexue vae-cluster train`` run folder)."""
    path = Path(path)
    if (path / f"seed-{seed}").is_dir():
        return path / f"seed-{seed}"
    if (path / "config.yaml").is_file() and run_config(path)[0] == STUDY_COMMAND:
        raise KexueError(f"--pretrained {path}: this study holds no seed-{seed}/ to start seed {seed} from")
    return path


def check_pretrained(
    source: Path, cfg: VAEClusterConfig, images: ImageSet, device: str | torch.device = "cpu", out: Path | None = None
) -> Path:
    """The final checkpoint of run folder ``source``'s pre-training, checked to be the one ``cfg`` would make.

    ``source`` must be a ``kexue vae-cluster train`` run folder (a study's ``seed-<s>/`` is one, and so is
    a run that itself started from another's pre-training) on the data set ``images``, whose pre-training
    ran to its last step with the :data:`PRETRAIN_FIELDS` of ``cfg``, on this ``device`` type and with
    this many processes (its ``pretrain/settings.json``; a run from before that record existed is read
    from its ``config.yaml``), and whose weights fit the model of ``cfg``. ``out``, the folder about to be
    written, must not be ``source`` or hold it.

    Raises:
        KexueError: naming ``--pretrained`` and what does not match.
    """
    source = Path(source)
    where = f"--pretrained {source}"
    check(source.is_dir(), f"{where}: no such run folder")
    if out is not None:
        mine, theirs = Path(out).resolve(), source.resolve()
        check(mine != theirs and mine not in theirs.parents, f"{where}: --out {out} would overwrite it")
    check((source / "config.yaml").is_file(), f"{where}: not a run folder (no config.yaml)")
    command, saved = run_config(source)
    check(command == TRAIN_COMMAND, f"{where}: not a `kexue vae-cluster train` run folder (it holds a {command} run)")
    data = str(saved.get("data"))
    same_data = data in (images.name, images.source) or (
        bool(images.source) and Path(data).expanduser().resolve() == Path(images.source).resolve()
    )
    check(same_data, f"{where}: pre-trained on {data}, not on {images.name}")
    record_path = source / "pretrain" / PRETRAIN_RECORD
    if record_path.is_file():
        theirs = read_json(record_path, "pre-training record")
        check(isinstance(theirs, dict), f"{record_path}: not a pre-training record")
    else:  # a run made before the record: its config.yaml (settings.lr may have changed on a resume since)
        theirs = saved.get("settings")
        check(isinstance(theirs, dict), f"{where}: its config.yaml holds no settings mapping")
        device_type = resolve_device(str(saved.get("device", "auto"))).type
        theirs = with_added_settings(theirs) | {"device": device_type, "processes": 1}
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    ours = _pretrain_record(cfg, dev)
    differ = [f"{k} {theirs.get(k)!r} (here {v!r})" for k, v in ours.items() if theirs.get(k) != v]
    check(not differ, f"{where}: its pre-training differs from this run's: " + ", ".join(differ))
    check(cfg.pretrain_epochs > 0, f"{where}: these settings have no pre-training (pretrain_epochs 0)")
    ckpt = latest_checkpoint(source / "pretrain" / "checkpoints")
    check(ckpt is not None, f"{where}: holds no pre-training checkpoint")
    want = cfg.pretrain_epochs * (len(images.train_x) // cfg.batch_size)
    check(
        ckpt.name == f"step-{want:06d}",
        f"{where}: its pre-training has not finished ({ckpt.name} of {want} steps): finish that run first",
    )
    weights = ckpt / "model.safetensors"
    state = read_tensors(weights)
    with torch.random.fork_rng(devices=[]):  # a model only for its names and shapes: the caller's draws stay
        own = ClusterVAE(images.image_size, cfg.latent_dim, cfg.num_classes, cfg.backbone, prior=cfg.prior).state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape] + [k for k in state if k not in own]
    check(not bad, f"{where}: weights {weights} do not fit this model ({', '.join(bad[:3])})")
    return ckpt


def _record_pretraining(pre_dir: Path | None, record: dict, resume: bool, steps: int) -> None:
    """Write ``pre_dir/settings.json`` when a pre-training starts; a resume that continues it with another
    ``lr`` or device (the changes a resume allows) marks those facts as mixed, so no run takes this
    pre-training for one made with either value."""
    if pre_dir is None or not dist.is_main():
        return
    path = pre_dir / PRETRAIN_RECORD
    if not resume:
        pre_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
        return
    last = latest_checkpoint(pre_dir / "checkpoints")
    if not path.is_file() or last is None or last.name == f"step-{steps:06d}":  # finished: nothing changes
        return
    old = read_json(path, "pre-training record")
    if isinstance(old, dict):
        write_json(path, {k: v if old.get(k) == v else "changed on a resume" for k, v in record.items()})


def _copy_pretraining(source: Path, ckpt: Path, pre_dir: Path) -> None:
    """Make ``pre_dir`` hold ``source``'s finished pre-training: its last checkpoint, metrics and record, and
    ``source.json`` naming where they came from. The run is then self-contained: it resumes, and serves as
    a source itself, without ``source``."""
    if pre_dir.exists():
        shutil.rmtree(pre_dir)
    (pre_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, pre_dir / "checkpoints" / ckpt.name)
    write_text(pre_dir / "checkpoints" / "latest", ckpt.name + "\n")
    for name in ("metrics.jsonl", PRETRAIN_RECORD):
        if (source / "pretrain" / name).is_file():
            shutil.copy2(source / "pretrain" / name, pre_dir / name)
    write_json(pre_dir / "source.json", {"pretrained": str(source), "checkpoint": str(ckpt)})


def train_cluster_vae(
    images: ImageSet,
    cfg: VAEClusterConfig,
    out_dir: Path | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    pretrained: Path | None = None,
) -> ClusterVAE:
    """Train the clustering VAE on ``images.train_x`` (no labels) and return it.

    With ``out_dir``, writes ``pretrain/`` and ``vae/`` folders (metrics.jsonl, checkpoints),
    ``init.json`` (as soon as the mixture initialisation ends) and ``model.safetensors`` +
    ``model.json``. With ``resume``, each phase continues from its own checkpoints: a finished
    pre-training is not repeated, and a VAE phase with a checkpoint skips pre-training and the
    mixture initialisation (whose scores are read back from ``init.json``). With ``pretrained`` (a run
    folder with the same pre-training settings, seed and data: :func:`check_pretrained`), the autoencoder
    starts from that run's finished pre-training instead of pre-training here: its last checkpoint is
    copied into ``pretrain/`` and the run continues exactly as one whose pre-training has finished. Example::

        model = train_cluster_vae(load_images("mnist5k"), VAEClusterConfig(epochs=5))

    Raises:
        KexueError: settings that do not fit these images, ``resume`` with no checkpoint in
            ``out_dir``, or training diverged.
    """
    check_settings(cfg, images)
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    out_dir = Path(out_dir) if out_dir is not None else None
    pre_dir, vae_dir = (out_dir / "pretrain", out_dir / "vae") if out_dir is not None else (None, None)
    resume_pre, resume_vae = resume and _phase_has_checkpoint(pre_dir), resume and _phase_has_checkpoint(vae_dir)
    if resume and not (resume_pre or resume_vae):
        raise KexueError(
            f"--resume: {out_dir if out_dir is not None else 'a run without a folder'} holds no "
            "checkpoint to resume from"
        )
    for phase_dir, resumed in ((pre_dir, resume_pre or resume_vae), (vae_dir, resume_vae)):
        if phase_dir is not None and not resumed and dist.is_main():  # under DDP rank 0 owns the folder
            shutil.rmtree(phase_dir, ignore_errors=True)  # a phase starting afresh: no stale metrics lines
    dist.barrier()
    torch.manual_seed(cfg.seed)
    model = ClusterVAE(
        images.image_size, cfg.latent_dim, cfg.num_classes, cfg.backbone, prior=cfg.prior, init=cfg.init
    ).to(dev)
    x = images.train_x
    per_epoch = len(x) // cfg.batch_size
    eval_x, eval_y = images.test_x, images.test_y

    def eval_fn(m):
        return evaluate_model(m, eval_x, eval_y)

    # 1. autoencoder pre-training (a finished one resumes as a no-op: its last checkpoint holds the weights)
    if pretrained is not None and not resume_pre and not resume_vae:  # another run's finished pre-training
        check(pre_dir is not None, "--pretrained needs a run folder to copy the pre-training into")
        ckpt = check_pretrained(Path(pretrained), cfg, images, dev)
        if dist.is_main():
            _copy_pretraining(Path(pretrained), ckpt, pre_dir)
        dist.barrier()
        resume_pre = True  # continues as a run whose pre-training has finished: the same weights
        print(f"autoencoder pre-training: the finished one of {pretrained}", flush=True)
    if cfg.pretrain_epochs and not resume_vae:
        pre = TrainConfig(
            steps=cfg.pretrain_epochs * per_epoch,
            lr=cfg.lr,
            seed=cfg.seed,
            clip_norm=None,
            log_every=per_epoch,
            ckpt_every=5 * per_epoch,
            progress=progress,
            find_unused_parameters=True,
        )  # under DDP: the classifier and μ_y wait for the VAE phase

        _record_pretraining(pre_dir, _pretrain_record(cfg, dev), resume_pre, pre.steps)

        def pre_loss(m, batch, g):
            if cfg.contrastive:  # two random views of every image: reconstruct both, agree on their codes
                views = random_affine(batch, g), random_affine(batch, g)
                return contrastive_autoencoder_loss(m, *views, cfg.contrastive)
            return autoencoder_loss(m, random_affine(batch, g) if cfg.augment else batch)

        fit(
            model,
            pre_loss,
            TensorBatches(x, batch_size=cfg.batch_size, seed=cfg.seed),
            pre,
            pre_dir,
            resume=resume_pre,
            desc="pretrain AE",
        )
    # 2. mixture initialisation (a resume in the VAE phase reads its scores back)
    init = {}
    if cfg.gmm_init and resume_vae:
        init_path = out_dir / "init.json"
        init = read_json(init_path, "initialisation scores") if init_path.is_file() else {}
    elif cfg.gmm_init:
        init = gmm_initialise(
            model,
            x,
            cfg.gmm_restarts,
            cfg.seed,
            cfg.classifier_fit_steps,
            spectral_neighbors=cfg.spectral_neighbors,
            manifold=cfg.manifold,
        )
        init.update({f"init_{k}": v for k, v in eval_fn(model).items()})  # labels score only
        if out_dir is not None:
            write_json(out_dir / "init.json", init)
        print(f"after GMM initialisation: test Hungarian acc {init['init_acc_hungarian']:.4f}", flush=True)
    anchor = _anchor_targets(model, x, cfg, out_dir, resume_vae)  # the initial partition, or None
    # 3. the VAE loss of archives/5887 (plus the label-free extensions of cfg)
    main = TrainConfig(
        steps=cfg.epochs * per_epoch,
        lr=cfg.lr,
        seed=cfg.seed + 1,
        clip_norm=None,
        log_every=per_epoch,
        eval_every=cfg.eval_every_epochs * per_epoch,
        ckpt_every=5 * per_epoch,
        progress=progress,
    )

    def loss_fn(m, batch, g):
        batch, fixed, step = batch if anchor is not None else (batch, None, 0)
        weight = anchor_weight(cfg, int(step), per_epoch)
        view = random_affine(batch, g) if cfg.augment else batch
        target = cluster_probs(m, batch) if cfg.consistency or cfg.self_training else None
        return cluster_vae_loss(
            m,
            view,
            g,
            cfg.kl,
            cfg.recon_weight,
            cfg.balance,
            cfg.batch_balance,
            target,
            cfg.consistency,
            cfg.self_training,
            fixed,
            weight,
        )

    batches = TensorBatches(*((x,) if anchor is None else (x, anchor)), batch_size=cfg.batch_size, seed=cfg.seed + 1)
    fit(
        model,
        loss_fn,
        batches if anchor is None else _WithStep(batches),
        main,
        vae_dir,
        eval_fn=eval_fn,
        resume=resume_vae,
        desc="train VAE",
    )
    if out_dir is not None:
        save_model(
            model, cfg, out_dir, extra={"data": images.name, "data_source": images.source or images.name, **init}
        )
    return model


def anchor_weight(cfg: VAEClusterConfig, step: int, per_epoch: int) -> float:
    """The anchor's weight at VAE step ``step``: ``cfg.anchor``, falling linearly to 0 over the first
    ``cfg.anchor_epochs`` epochs when that is set. Example: anchor 10, anchor_epochs 2, 5 steps an
    epoch: 10 at step 0, 5 at step 5, 0 from step 10 on."""
    if cfg.anchor_epochs is None:
        return cfg.anchor
    return cfg.anchor * max(0.0, 1.0 - step / (cfg.anchor_epochs * per_epoch))


class _WithStep:
    """The batches of ``data`` with their step appended (the anchor's release schedule reads it: a
    resume continues it exactly)."""

    def __init__(self, data: TensorBatches):
        self.data = data

    def batch(self, micro_step: int):
        return (*self.data.batch(micro_step), torch.tensor(micro_step))


def _anchor_targets(
    model: ClusterVAE, x: torch.Tensor, cfg: VAEClusterConfig, out_dir: Path | None, resume_vae: bool
) -> torch.Tensor | None:
    """``settings.anchor``'s fixed targets: p(y | μ(x)) of every training image right after the mixture
    initialisation, (N, K); written to ``anchor.safetensors`` in the run folder and read back by a resume
    of the VAE phase (the model has moved on by then). None when the anchor is off or there is no
    initial partition to hold (``gmm_init`` false)."""
    if not cfg.anchor or not cfg.gmm_init:
        return None
    path = out_dir / "anchor.safetensors" if out_dir is not None else None
    if resume_vae and path is not None:
        check(path.is_file(), f"--resume: {path} (the initial partition of --settings.anchor) is missing")
        targets = read_tensors(path, "anchor targets").get("targets")
        check(
            targets is not None and targets.shape == (len(x), cfg.num_classes),
            f"{path} does not fit these training images",
        )
        return targets
    device = next(model.parameters()).device
    with torch.no_grad():
        targets = torch.cat([cluster_probs(model, x[i : i + 1000].to(device)).cpu() for i in range(0, len(x), 1000)])
    if path is not None and dist.is_main():
        save_file({"targets": targets.contiguous()}, str(path))
    return targets


def evaluate_model(model: ClusterVAE, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Clustering scores of ``model`` on images ``x`` with labels ``y`` (labels only score).

    Returns Hungarian and majority accuracy, NMI, ARI and ``largest_cluster_share``. Example:
    ``evaluate_model(model, images.test_x, images.test_y)["acc_hungarian"]``.
    """
    device = next(model.parameters()).device
    pred = model.predict(x.to(device)).cpu().numpy()
    labels = np.unique(y.numpy(), return_inverse=True)[1].reshape(-1)  # 0..L-1: the scores ignore label names
    scores = clustering_scores(pred, labels)
    sizes = cluster_sizes(pred, model.num_classes)
    scores["largest_cluster_share"] = max(sizes) / len(pred)
    return scores


@torch.no_grad()
def self_consistency(model: ClusterVAE, per_class: int = 100, seed: int = 0) -> float:
    """Fraction of class-conditional samples that the model assigns back to the class they were drawn from.

    Draws ``per_class`` images per class y (z ~ q(z|y), x = G(z), :meth:`ClusterVAE.sample`) and
    clusters them (:meth:`ClusterVAE.predict`); label-free: the model checks itself. With the same
    ``per_class`` and ``seed`` the images are those of :func:`plot_samples`. Returns a number in [0, 1].
    Example: ``self_consistency(model, per_class=100, seed=0)`` -> 0.97.
    """
    check(per_class >= 1, f"per_class must be >= 1, got {per_class}")
    device = model.class_means.device
    classes = torch.arange(model.num_classes, device=device).repeat_interleave(per_class)  # (K·per_class,)
    # drawn on the CPU, so that a study scoring on a GPU and `eval` on the CPU see the same samples
    images = model.sample(classes, torch.Generator().manual_seed(seed))  # (K·per_class, 1, H, W)
    return float((model.predict(images) == classes).double().mean())


def run_self_consistency(run: Path, per_class: int = 100, seed: int = 0, device: str = "cpu") -> float:
    """:func:`self_consistency` of a trained run folder (``kexue vae-cluster sample`` prints it)."""
    model, _ = load_model(run, resolve_device(str(device)))
    return self_consistency(model, per_class, seed)


# ---- a trained model on disk ------------------------------------------------------------------


def save_model(model: ClusterVAE, cfg: VAEClusterConfig, folder: Path, extra: dict | None = None) -> None:
    """``model.safetensors`` + ``model.json`` (everything needed to rebuild the model)."""
    write_json(
        folder / "model.json",
        {"config": asdict(cfg), "image_size": list(model.image_size), "backbone": model.backbone, **(extra or {})},
    )
    save_weights(model, folder / "model.safetensors")


def check_train_run(run: Path, flag: str = "--run") -> Path:
    """``run`` must be a folder written by ``kexue vae-cluster train`` (or a seed of a study)."""
    run = Path(run)
    check(run.exists(), f"{flag} {run}: no such folder")
    check(run.is_dir(), f"{flag} {run} is not a folder")
    if (run / "config.yaml").is_file():
        command, _ = run_config(run)
        if command not in (None, TRAIN_COMMAND):
            hint = "; give one of its seed-<s> folders" if command == STUDY_COMMAND else ""
            raise KexueError(f"{flag} {run} is a {command} run, not a {TRAIN_COMMAND} run{hint}")
    return run


def load_model(run: Path, device: str | torch.device = "cpu") -> tuple[ClusterVAE, dict]:
    """Rebuild a trained model from a run folder; returns (model in eval mode, its model.json).

    Example: ``model, meta = load_model("runs/vae")``; ``meta["data"]`` names its training data.
    """
    run = check_train_run(run)
    meta_path = run / "model.json"
    if not meta_path.is_file():
        raise KexueError(
            f"no trained model in {run} (missing model.json); run `kexue vae-cluster train` first "
            "or finish it with --resume"
        )
    meta = read_json(meta_path, "model file")
    try:
        unknown = sorted(set(meta["config"]) - {f.name for f in fields(VAEClusterConfig)})
        check(not unknown, f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        cfg = VAEClusterConfig(**with_added_settings(meta["config"]))  # a setting added since: its old default
        size = tuple(int(v) for v in meta["image_size"])
        check(len(size) == 2 and min(size) > 0, f"image_size {meta['image_size']!r} is not two sizes")
        model = ClusterVAE(size, cfg.latent_dim, cfg.num_classes, meta["backbone"], prior=cfg.prior)
    except (KeyError, TypeError, ValueError, KexueError) as e:
        reason = f"it lacks the key {e}" if isinstance(e, KeyError) else str(e)
        raise KexueError(f"model file {meta_path} is malformed: {reason}") from None
    load_weights(model, run / "model.safetensors")
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    return model.to(dev).eval(), meta


def training_data(meta: dict, path: Path) -> str:
    """What loads a run's training data again: ``data_source`` of its model.json (older runs: ``data``)."""
    data = meta.get("data_source") or meta.get("data")
    check(isinstance(data, str) and bool(data), f"{path} names no training data set; give --data")
    return data


def is_training_data(images: ImageSet, meta: dict) -> bool:
    """Whether ``images`` are the data set the run of ``meta`` (its model.json) was trained on."""
    if meta.get("data_source") and images.source:
        return images.source == meta["data_source"]
    return images.name == meta.get("data")


def eval_file(run: Path, images: ImageSet, meta: dict) -> Path:
    """``eval.json`` for the run's own data set, ``eval-<name>.json`` for any other one."""
    if is_training_data(images, meta):
        return Path(run) / "eval.json"
    return Path(run) / f"eval-{re.sub(r'[^A-Za-z0-9_.-]+', '_', images.name)}.json"


def check_image_size(model: ClusterVAE, images: ImageSet) -> None:
    """``images`` must have the size the model was trained on."""
    (h, w), (mh, mw) = images.image_size, model.image_size
    check((h, w) == (mh, mw), f"--data {images.name} has {h}×{w} images; the model was trained on {mh}×{mw}")


def _load_run_and_data(run: Path, data: str | None, device: str | torch.device = "cpu"):
    model, meta = load_model(run, device)
    images = load_images(data if data is not None else training_data(meta, Path(run) / "model.json"))
    check_image_size(model, images)
    return model, meta, images


# ---- runs: what `kexue vae-cluster train / eval / sample` do ------------------------------------


def check_run_flags(out: Path | None, resume: bool, overwrite: bool, what: str = "run") -> None:
    """``--resume`` / ``--overwrite`` / ``--out`` rules, before any data is read."""
    check(not (resume and overwrite), "choose one of --resume and --overwrite")
    check(not resume or out is not None, f"--resume needs --out, the folder of the {what} to continue")
    check_output_dir(out)


def figures_for(data: str, scores: dict[str, float], command: str, preset: str = "ours") -> list[Figure]:
    """``vae.<data>.<metric>`` (``vae.<preset>.<data>.<metric>``) results rows of one run, beside the
    published numbers."""
    out, prefix = [], key_prefix(preset, data)
    for metric in METRICS:
        published, source = PUBLISHED.get((prefix[4:], metric), (None, None))
        out.append(Figure(f"{prefix}.{metric}", scores[metric], published, source, command))
    return out


def train_run(
    data: str = "mnist5k",
    out: Path | None = None,
    settings: VAEClusterConfig = DEFAULT_SETTINGS,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    preset: Preset = "ours",
    pretrained: Path | None = None,
) -> tuple[Path, dict]:
    """Train in a run folder and score the test split: ``kexue vae-cluster train`` from Python.

    ``preset`` names the results rows (``vae.<preset>.<data>.*`` unless ``ours``) and is recorded in
    config.yaml; ``settings`` are used as given and default to the preset's own
    (``train_run("fashion_mnist", preset="su2018")``; with changes:
    ``settings=preset_settings("su2018", epochs=5)``). On the CLI, ``--preset`` sets the preset's
    settings and ``--settings.*`` flags go on top (:func:`preset_arguments`). ``pretrained``: a run
    folder whose finished pre-training this run starts from (:func:`check_pretrained`).

    Writes the run folder (see the module docstring), ``eval.json`` and ``results.json`` (whose
    rows carry the ``kexue vae-cluster train`` command that reruns them). Returns (run folder,
    ``{"data": name, "acc_hungarian": ..., ...}`` as in eval.json). Example:
    ``run, scores = train_run("digits", "runs/d", VAEClusterConfig(epochs=2))``.
    """
    arguments = dict(locals())
    check_preset(preset)
    cfg, device = PRESETS[preset] if settings is DEFAULT_SETTINGS else settings, str(device)
    resolve_device(device)
    check_run_flags(out, resume, overwrite, "run")
    if resume and not has_checkpoint(Path(out)):
        started = Path(out).is_dir() and any(Path(out).iterdir())
        raise KexueError(
            f"--resume: {out} holds no checkpoint to resume from; start it again with --overwrite"
            if started
            else f"--resume: {out} holds no run to resume"
        )
    images = load_images(data)
    check_settings(cfg, images)
    if pretrained is not None:  # before the run folder is made; a resume has its own copy of the pre-training
        pretrained = pretrained_source(pretrained, cfg.seed)
        if not resume:
            check_pretrained(pretrained, cfg, images, device, out)
    run = make_run_dir(
        out,
        TRAIN_COMMAND,
        {"data": data, "settings": asdict(cfg), "device": device}
        | ({"preset": preset} if preset != "ours" else {})
        | ({"pretrained": str(pretrained)} if pretrained is not None else {}),
        resume=resume,
        overwrite=overwrite,
    )
    model = train_cluster_vae(images, cfg, run, resume=resume, device=device, pretrained=pretrained)
    record = {"data": images.name, **evaluate_model(model, images.test_x, images.test_y)}
    write_json(run / "eval.json", record)
    command = command_line("vae-cluster train", train_run, arguments)
    write_results(run / "results.json", figures_for(images.name, record, command, preset))
    return run, record


def evaluate_run(run: Path, data: str | None = None, device: str = "cpu") -> tuple[Path, dict]:
    """Score a trained run on a test split (default: its training data set's).

    Writes ``RUN/eval.json`` for the run's own data set, ``RUN/eval-<data>.json`` for another one,
    with ``sample_self_consistency`` (:func:`self_consistency`, 100 samples per class) beside the scores.
    Returns (that file, ``{"data": name, "acc_hungarian": ..., ...}``).
    """
    model, meta, images = _load_run_and_data(run, data, resolve_device(str(device)))
    record = {"data": images.name, **evaluate_model(model, images.test_x, images.test_y)}
    record["sample_self_consistency"] = self_consistency(model, SELF_CONSISTENCY_PER_CLASS)  # no labels
    return write_json(eval_file(Path(run), images, meta), record), record


def sample_run(
    run: Path, out: Path | None = None, per_class: int = 10, seed: int = 0, data: str | None = None
) -> list[Path]:
    """``clusters.png`` (real test images per cluster) and ``samples.png`` (z ~ N(μ_y, I)) of a run.

    Written into ``out`` (default: the run folder). Returns their paths.
    """
    check(per_class <= MAX_PER_CLASS, f"--per_class {per_class}: at most {MAX_PER_CLASS} images per row")
    check_output_dir(out)
    model, _, images = _load_run_and_data(run, data)
    folder = Path(out) if out is not None else Path(run)
    return [
        plot_clusters(model, images.test_x, folder / "clusters.png", per_class, seed),
        plot_samples(model, folder / "samples.png", per_class, seed),
    ]


def plot_clusters(model: ClusterVAE, x: torch.Tensor, path: Path, per_cluster: int = 10, seed: int = 0) -> Path:
    """A grid: row k holds up to ``per_cluster`` real images the model puts in cluster k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = model.predict(x.to(next(model.parameters()).device)).cpu()
    g = torch.Generator().manual_seed(seed)
    K = model.num_classes
    fig, axes = plt.subplots(K, per_cluster, figsize=(per_cluster * 0.6, K * 0.6), squeeze=False)
    for k in range(K):
        members = torch.nonzero(pred == k).flatten()
        members = members[torch.randperm(len(members), generator=g)[:per_cluster]]
        for j in range(per_cluster):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(members):
                ax.imshow(x[members[j], 0].numpy(), cmap="gray", vmin=0, vmax=1)
    _label_rows(axes)
    fig.suptitle("real members of each cluster (row = cluster)", fontsize=8)
    return save_figure(fig, path)


def _label_rows(axes) -> None:
    """Write each row's index left of its first image (a title would hide under the row above)."""
    for k in range(axes.shape[0]):
        ax = axes[k, 0]
        ax.text(-0.1, 0.5, f"{k}", transform=ax.transAxes, fontsize=7, ha="right", va="center")


def plot_samples(model: ClusterVAE, path: Path, per_class: int = 10, seed: int = 0) -> Path:
    """A grid: row y holds images decoded from z ~ N(μ_y, I)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = model.num_classes
    classes = torch.arange(K).repeat_interleave(per_class).to(model.class_means.device)
    imgs = model.sample(classes, torch.Generator().manual_seed(seed)).cpu()  # CPU draws: the same on every device
    fig, axes = plt.subplots(K, per_class, figsize=(per_class * 0.6, K * 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        ax.imshow(imgs[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    _label_rows(axes)
    fig.suptitle("class-conditional samples, z ~ N(mu_y, I) (row = class)", fontsize=8)
    return save_figure(fig, path)


# ---- seed studies: what `kexue vae-cluster study` does ---------------------------------------


def parse_seeds(seeds: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything but distinct integers >= 0 is a KexueError."""
    try:
        seed_list = [int(s) for s in str(seeds).split(",") if s.strip()]
    except ValueError:
        raise KexueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    check(bool(seed_list), "--seeds is empty")
    check(min(seed_list) >= 0, f"--seeds must be >= 0, got {seeds!r}")
    check(len(set(seed_list)) == len(seed_list), f"--seeds repeats a seed: {seeds!r}")
    return seed_list


def seed_summary(values: list[float]) -> dict[str, float]:
    """mean, population std and best of per-seed values."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "best": float(arr.max()), "n": len(arr)}


def _scores_only(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def finished_scores(run: Path, cfg: VAEClusterConfig, images: ImageSet) -> dict[str, float] | None:
    """Test scores of a finished run of ``cfg`` on ``images``; None when there is none.

    Finished: weights and a ``model.json`` whose settings are ``cfg`` and whose data set is
    ``images``. The scores come from ``eval.json`` when it was written for that data set; else the
    model is evaluated again (and ``eval.json`` rewritten), so scores on other data never count.
    """
    meta_path = Path(run) / "model.json"
    if not (meta_path.is_file() and (Path(run) / "model.safetensors").is_file()):
        return None
    meta = read_json(meta_path, "model file")
    saved = with_added_settings(meta.get("config") or {})
    if saved != asdict(cfg) or not is_training_data(images, meta):
        return None
    done = Path(run) / "eval.json"
    if done.is_file():
        record = read_json(done, "evaluation file")
        if record.get("data") == images.name:
            return _scores_only(record)
    model, _ = load_model(run)
    scores = evaluate_model(model, images.test_x, images.test_y)
    write_json(done, {"data": images.name, **scores})
    return scores


def run_seeds(
    data: str,
    cfg: VAEClusterConfig,
    seeds: list[int],
    out: Path,
    device: str = "auto",
    progress: bool = True,
    images: ImageSet | None = None,
    pretrained: Path | None = None,
    jobs: int = 1,
) -> dict[str, list[float]]:
    """Train one model per seed under ``out/seed-<s>/``; returns metric -> [test score per seed].

    A seed already finished with these settings is read back, one with a checkpoint resumes, one
    never started (or stopped before its first checkpoint) starts afresh. ``images``, when given,
    are ``data`` already loaded. Each ``seed-<s>/config.yaml`` reruns that seed alone. With
    ``pretrained`` (a study or run folder), seed s starts from the finished pre-training of
    :func:`pretrained_source` (``pretrained``/seed-<s>). With ``jobs`` > 1, the seeds still to
    train run that many at a time, each in its own process with its share of the torch threads
    (:func:`_seed_in_worker`; no progress bars, a line per finished seed); each seed's run folder
    is the one it would have had alone.
    """
    images = images if images is not None else load_images(data)
    check_settings(cfg, images)
    check_jobs(jobs)
    scores_of: dict[int, dict[str, float]] = {}
    todo = []
    for seed in seeds:
        scores = finished_scores(Path(out) / f"seed-{seed}", replace(cfg, seed=seed), images)
        if scores is not None and "sample_self_consistency" in scores:
            scores_of[seed] = _report_seed(data, seed, scores)
        else:
            todo.append(seed)
    if jobs > 1 and len(todo) > 1:
        import multiprocessing

        workers = min(jobs, len(todo))
        threads = max(1, torch.get_num_threads() // workers)
        print(
            f"[{data}] seeds {', '.join(map(str, todo))}: {workers} at a time, {threads} torch thread(s) each",
            flush=True,
        )
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch or numba pools
        new_runs = [Path(out) / f"seed-{seed}" for seed in todo if not (Path(out) / f"seed-{seed}").exists()]
        pool = context.Pool(workers)
        try:
            tasks = [(data, cfg, seed, out, device, pretrained, threads) for seed in todo]
            for seed, scores in pool.imap_unordered(_seed_in_worker, tasks):
                scores_of[seed] = _report_seed(data, seed, scores)
        except BaseException:  # a failed seed or Ctrl-C: stop the others now (each resumes from its checkpoints)
            pool.terminate()
            for run in new_runs:  # a seed folder the workers made that holds nothing to resume from goes again
                if run.is_dir() and not has_checkpoint(run) and not (run / "model.safetensors").exists():
                    shutil.rmtree(run, ignore_errors=True)
            raise
        finally:
            pool.close()
            pool.join()
    else:
        for seed in todo:
            scores = train_seed(data, cfg, seed, out, device, progress, images, pretrained)
            scores_of[seed] = _report_seed(data, seed, scores)
    per_seed: dict[str, list[float]] = {}
    for seed in seeds:
        meta = read_json(Path(out) / f"seed-{seed}" / "model.json", "model file")  # right after the initialisation
        init = {k: v for k, v in _scores_only(meta).items() if k in ("init_acc_hungarian", "init_acc_majority")}
        for k, v in {**scores_of[seed], **init}.items():
            per_seed.setdefault(k, []).append(float(v))
    return per_seed


def check_jobs(jobs: int) -> None:
    """``--jobs``: an integer >= 1, and 1 under torchrun (whose processes already split the work)."""
    check(
        isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1,
        f"--jobs must be an integer >= 1, got {jobs!r}",
    )
    check(jobs == 1 or dist.world_size() == 1, "--jobs > 1 runs seeds in processes of its own: not under torchrun")


def train_seed(
    data: str,
    cfg: VAEClusterConfig,
    seed: int,
    out: Path,
    device: str = "auto",
    progress: bool = True,
    images: ImageSet | None = None,
    pretrained: Path | None = None,
) -> dict[str, float]:
    """One seed of a study in ``out/seed-<seed>/``: read back if finished, else resumed or started; its
    test scores with ``sample_self_consistency`` (the class-conditional samples assigned back, no labels).
    Example: ``train_seed("digits", VAEClusterConfig(epochs=2), 3, Path("runs/study"))`` (``runs/study/seed-3``)."""
    images = images if images is not None else load_images(data)
    run = Path(out) / f"seed-{seed}"
    seed_cfg = replace(cfg, seed=seed)
    scores = finished_scores(run, seed_cfg, images)
    model = None  # read back; loaded only if a check is missing
    if scores is None:
        resume = has_checkpoint(run)
        stale = run.is_dir() and any(run.iterdir()) and not resume
        source = pretrained_source(pretrained, seed) if pretrained is not None else None
        make_run_dir(
            run,
            TRAIN_COMMAND,
            {"data": data, "settings": asdict(seed_cfg), "device": str(device)}
            | ({"pretrained": str(source)} if source is not None else {}),
            resume=resume,
            overwrite=stale,
        )
        model = train_cluster_vae(
            images, seed_cfg, run, resume=resume, device=device, progress=progress, pretrained=source
        )
        scores = evaluate_model(model, images.test_x, images.test_y)
    if "sample_self_consistency" not in scores:  # a fresh seed, or one finished before this check existed
        model = model if model is not None else load_model(run)[0]
        scores["sample_self_consistency"] = self_consistency(model, SELF_CONSISTENCY_PER_CLASS)  # no labels
        write_json(run / "eval.json", {"data": images.name, **scores})
    return scores


def _seed_in_worker(task: tuple) -> tuple[int, dict[str, float]]:
    """:func:`train_seed` in a worker process of ``run_seeds(jobs > 1)``, on ``threads`` torch threads."""
    data, cfg, seed, out, device, pretrained, threads = task
    torch.set_num_threads(threads)
    return seed, train_seed(data, cfg, seed, out, device, progress=False, pretrained=pretrained)


def _report_seed(data: str, seed: int, scores: dict[str, float]) -> dict[str, float]:
    print(
        f"[{data} seed {seed}] Hungarian {scores['acc_hungarian']:.4f}  majority {scores['acc_majority']:.4f}",
        flush=True,
    )
    return scores


def seed_figures(data: str, per_seed: dict[str, list[float]], command: str, preset: str = "ours") -> list[Figure]:
    """Mean over seeds as ``vae.<data>.<metric>`` (``vae.<preset>.<data>.<metric>``), plus ``_std`` and
    ``_best`` keys; ``init_acc_*`` (the scores right after the mixture initialisation) and
    ``sample_self_consistency`` (mean and ``_std``) when every seed has them."""
    figures, prefix = [], key_prefix(preset, data)
    for metric in METRICS:
        s = seed_summary(per_seed[metric])
        published, source = PUBLISHED.get((prefix[4:], metric), (None, None))
        figures += [
            Figure(f"{prefix}.{metric}", s["mean"], published, source, command),
            Figure(f"{prefix}.{metric}_std", s["std"], None, None, command),
            Figure(f"{prefix}.{metric}_best", s["best"], published, source, command),
        ]
    # the mixture initialisation alone, and the samples assigned back to their cluster (label-free)
    for metric in ("init_acc_hungarian", "init_acc_majority", "sample_self_consistency"):
        if len(per_seed.get(metric, [])) == len(per_seed["acc_hungarian"]):
            s = seed_summary(per_seed[metric])
            figures += [
                Figure(f"{prefix}.{metric}", s["mean"], None, None, command),
                Figure(f"{prefix}.{metric}_std", s["std"], None, None, command),
            ]
    return figures


def run_study(
    data: str = "mnist5k",
    seeds: str = "0,1,2,3,4",
    out: Path | None = None,
    results: Path | None = None,
    settings: VAEClusterConfig = DEFAULT_SETTINGS,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    preset: Preset = "ours",
    pretrained: Path | None = None,
    jobs: int = 1,
) -> tuple[Path, dict[str, list[float]]]:
    """Train and score one model per seed in a study folder: ``kexue vae-cluster study`` from Python.

    Writes ``out/seed-<s>/`` (one run folder per seed), ``per_seed.json`` and ``results.json``
    (mean, std and best over the seeds; its rows carry the ``kexue vae-cluster study`` command
    with the seeds and settings); with ``results``, also merges the rows into that file. With
    ``resume``, finished seeds are read back, unfinished ones resume, new ones start. With
    ``pretrained`` (an earlier study's folder, or one run's), each seed starts from that study's
    finished pre-training of the same seed (:func:`check_pretrained`: same pre-training settings).
    With ``jobs`` > 1, that many seeds train at once, each in its own process (:func:`run_seeds`).
    Returns (study folder, metric -> [score per seed]). Example:
    ``folder, per_seed = run_study("digits", "0,1", "runs/s", settings=VAEClusterConfig(epochs=2))``.
    """
    arguments = dict(locals())
    seed_list = parse_seeds(seeds)
    check_jobs(jobs)
    device = str(device)
    resolve_device(device)
    check_run_flags(out, resume, overwrite, "study")
    check_results_file(results)
    images = load_images(data)
    check_preset(preset)
    cfg = PRESETS[preset] if settings is DEFAULT_SETTINGS else settings  # the preset's own unless given
    check_settings(cfg, images)
    if pretrained is not None:  # every new seed's source, before the study folder is made
        for seed in seed_list:
            if out is None or not has_checkpoint(Path(out) / f"seed-{seed}"):
                source = pretrained_source(pretrained, seed)
                check_pretrained(source, replace(cfg, seed=seed), images, device, out)
    config = (
        {"data": data, "seeds": seeds, "results": results, "settings": asdict(cfg), "device": device}
        | ({"preset": preset} if preset != "ours" else {})  # runs made before presets existed resume unchanged
        | ({"pretrained": str(pretrained)} if pretrained is not None else {})
    )
    folder = make_run_dir(
        out, STUDY_COMMAND, config, resume=resume, overwrite=overwrite, may_change=RESUME_MAY_CHANGE | {"seeds"}
    )
    per_seed = run_seeds(data, cfg, seed_list, folder, device, images=images, pretrained=pretrained, jobs=jobs)
    command = command_line("vae-cluster study", run_study, arguments, keep=("data", "seeds"))
    figures = seed_figures(images.name, per_seed, command, preset)
    write_results(folder / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    write_json(folder / "per_seed.json", per_seed)
    return folder, per_seed


# ---- ablations: one study per lever, collected under its own keys ------------------------------


def collect_studies(studies: Path, results: Path, prefix: str = "vae_ablation") -> list[Figure]:
    """Merge every ``studies/<lever>/<data>/results.json`` into ``results`` as ``<prefix>.<lever>.<data>.<metric>``.

    Each lever's study writes the keys of our recipe (``vae.<data>.<metric>``), which the final
    studies own in benchmarks/results/vae_cluster.json; here they are kept apart, one key per lever.
    Values, published numbers and commands (the ``kexue vae-cluster study`` line that reruns the
    lever) are copied unchanged; studies without a results.json (not finished) are skipped.
    Returns the merged figures. Example: ``collect_studies("runs/vae-ablation",
    "benchmarks/results/vae_ablation.json")`` -> rows ``vae_ablation.umap.mnist5k.acc_hungarian``, ...
    """
    check_results_file(results)
    studies = Path(studies)
    check(studies.is_dir(), f"{studies}: no such folder of studies")
    figures = []
    for path in sorted(studies.glob("*/*/results.json")):
        lever = path.parent.parent.name
        for key, row in load_results(path).items():
            check(key.startswith("vae."), f"{path}: {key} is not a row of a vae-cluster study")
            figures.append(
                Figure(f"{prefix}.{lever}.{key[len('vae.') :]}", row["value"], row["published"], row["source"],
                       row["command"])
            )  # fmt: skip
    if figures:
        write_results(results, figures, merge=True)
    return figures
