"""``kexue vae-cluster train / eval / sample``: the clustering VAE end to end (article 1).

The training recipe (:func:`train_cluster_vae`), all unsupervised, labels only for evaluation:

1. optional autoencoder pre-training of the encoder mean and decoder;
2. optional GMM initialisation: a K-component Gaussian mixture on μ(x) (the restart with the
   best likelihood of ``gmm_restarts``); the latent space is rescaled so the mixture's
   within-class spread matches the prior's unit variance, μ_y take the mixture means, and the
   classifier is fitted to the mixture's responsibilities;
3. the VAE loss of archives/5887 through the shared :func:`kexue.training.fit`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kexue.analysis.clustering import cluster_sizes, clustering_scores
from kexue.data.images import ImageSet, load_images, random_affine
from kexue.errors import KexueError
from kexue.io import make_run_dir, save_figure, write_json
from kexue.models.vae_cluster import ClusterVAE, autoencoder_loss, cluster_probs, cluster_vae_loss
from kexue.results import Figure, write_results
from kexue.training import TensorBatches, TrainConfig, fit
from kexue.training.checkpoint import load_weights, save_weights

PUBLISHED = {  # (value, source) of the numbers we stand beside; see ANCHORS.md §1
    ("mnist5k", "acc_hungarian"): (0.9446, "VaDE README, full MNIST, pretrained AE"),
    ("mnist5k", "acc_majority"): (0.845, "kexue.fm/archives/5887 (2018), full MNIST"),
    ("fashion_mnist", "acc_majority"): (0.606, "kexue.fm/archives/5887 (2018)"),
}


@dataclass
class VAEClusterConfig:
    """Settings of one clustering-VAE run.

    The defaults are our best label-free recipe; the author's setting (archives/5887) is
    ``pretrain_epochs=0, gmm_init=False, augment=False, consistency=0, balance=True,
    batch_balance=0, spectral_neighbors=0``.

    Attributes:
        epochs: VAE training epochs (author: 50).
        batch_size: images per step (author: 100).
        lr: Adam learning rate (author: 1e-3).
        latent_dim: size d of z (author: 20).
        num_classes: K, the number of clusters (author: 10).
        kl: 'sampled' (Su's revision) or 'closed' (2018 code).
        recon_weight: λ on the squared error (2.5 revision, 5 in 2018).
        balance: include KL(p(y|z) || q(y)) (Su: optional).
        batch_balance: weight of KL(batch-mean p(y|z) || uniform), an extension.
        pretrain_epochs: autoencoder pre-training epochs (0 = none, as the author).
        gmm_init: initialise μ_y and the classifier from a Gaussian mixture on the codes.
        gmm_restarts: mixture restarts; the best by likelihood (unsupervised) is kept.
        classifier_fit_steps: steps fitting p(y|z) to the mixture's responsibilities.
        spectral_neighbors: fit the mixture on a spectral embedding of the k-NN graph of the
            codes (0 = on the codes themselves), an extension.
        consistency: weight of the augmentation-consistency term, an extension (0 = off).
        augment: train on randomly shifted, rotated and scaled images.
        backbone: auto (conv for 28×28, MLP otherwise), conv or mlp.
        seed: random seed.
        eval_every_epochs: log test-set scores every N epochs (labels score only).
    """

    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    latent_dim: int = 20
    num_classes: int = 10
    kl: str = "sampled"
    recon_weight: float = 2.5
    balance: bool = False
    batch_balance: float = 1.0
    pretrain_epochs: int = 30
    gmm_init: bool = True
    gmm_restarts: int = 5
    classifier_fit_steps: int = 300
    spectral_neighbors: int = 20
    consistency: float = 10.0
    augment: bool = True
    backbone: str = "auto"
    seed: int = 0
    eval_every_epochs: int = 5

    def __post_init__(self) -> None:
        if self.kl not in ("sampled", "closed"):
            raise KexueError(f"kl must be 'sampled' or 'closed', got {self.kl!r}")
        if min(self.epochs, self.batch_size, self.latent_dim) < 1 or self.num_classes < 2:
            raise KexueError("epochs, batch_size and latent_dim must be >= 1 and num_classes >= 2")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KexueError("CUDA was asked for but is not available")
    return torch.device(name)


def evaluate_model(model: ClusterVAE, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Clustering scores of ``model`` on images ``x`` with labels ``y`` (labels only score)."""
    device = next(model.parameters()).device
    pred = model.predict(x.to(device)).cpu().numpy()
    scores = clustering_scores(pred, y.numpy())
    sizes = cluster_sizes(pred, model.num_classes)
    scores["largest_cluster_share"] = max(sizes) / len(pred)
    return scores


@torch.no_grad()
def gmm_initialise(model: ClusterVAE, x: torch.Tensor, restarts: int, seed: int, fit_steps: int,
                   lr: float = 1e-3, spectral_neighbors: int = 0, max_points: int = 20000) -> dict[str, float]:
    """Initialise μ_y and p(y|z) from a Gaussian mixture on the codes μ(x) (no labels).

    The mixture is fitted on μ(x) itself, or, with ``spectral_neighbors`` > 0, on a spectral
    embedding of the k-nearest-neighbour graph of μ(x) (it follows the data manifold; an
    extension, not in the sources). The latent space is rescaled so that the clusters'
    within-class spread matches the prior's unit variance (an exact reparameterisation of the
    autoencoder), μ_y become the responsibility-weighted cluster means, and the classifier is
    fitted to the responsibilities. At most ``max_points`` images (a seeded random subset) enter
    the mixture, which bounds the cost of the spectral embedding on large data sets.
    """
    from sklearn.mixture import GaussianMixture

    device = next(model.parameters()).device
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]]
    codes = model.embed(x.to(device)).cpu().double()                  # (N, d)
    features = codes.numpy()
    if spectral_neighbors:
        from sklearn.manifold import SpectralEmbedding

        features = SpectralEmbedding(n_components=model.num_classes, affinity="nearest_neighbors",
                                     n_neighbors=spectral_neighbors, random_state=seed).fit_transform(features)
    features = features / features.std()  # one global scale, so reg_covar means the same everywhere
    gmm = GaussianMixture(model.num_classes, covariance_type="full" if spectral_neighbors else "diag",
                          n_init=restarts, random_state=seed, reg_covar=1e-4).fit(features)
    resp = torch.as_tensor(gmm.predict_proba(features))               # (N, K) soft assignments
    weights = resp / resp.sum(0, keepdim=True).clamp_min(1e-12)
    means = weights.T @ codes                                          # (K, d)
    spread = (resp.unsqueeze(-1) * (codes.unsqueeze(1) - means.unsqueeze(0)).pow(2)).sum((0, 1)) / len(codes)
    scale = float(spread.mean().sqrt())                                # within-class std of μ(x)
    # Exact reparameterisation: μ'(x) = μ(x)/s and G'(z') = G(s·z'), so the AE is unchanged.
    enc_out: torch.nn.Linear = model.encoder[-1]
    d = model.latent_dim
    enc_out.weight[:d] /= scale
    enc_out.bias[:d] /= scale
    dec_in: torch.nn.Linear = model.decoder[0]
    dec_in.weight *= scale
    model.class_means.copy_((means / scale).to(model.class_means.dtype))
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


def train_cluster_vae(images: ImageSet, cfg: VAEClusterConfig, out_dir: Path | None = None,
                      resume: bool = False, device: str = "auto", progress: bool = True) -> ClusterVAE:
    """Train the clustering VAE on ``images.train_x`` (no labels) and return it.

    With ``out_dir``, writes ``pretrain/`` and ``vae/`` folders (metrics.jsonl, checkpoints) and
    ``model.safetensors`` + ``model.json``. Example::

        model = train_cluster_vae(load_images("mnist5k"), VAEClusterConfig(epochs=5))
    """
    dev = _device(device)
    torch.manual_seed(cfg.seed)
    model = ClusterVAE(images.image_size, cfg.latent_dim, cfg.num_classes, cfg.backbone).to(dev)
    x = images.train_x
    per_epoch = len(x) // cfg.batch_size
    if per_epoch == 0:
        raise KexueError(f"batch size {cfg.batch_size} exceeds the {len(x)} training images")
    sub = (lambda name: Path(out_dir) / name) if out_dir is not None else (lambda name: None)
    eval_x, eval_y = images.test_x, images.test_y

    def eval_fn(m):
        return evaluate_model(m, eval_x, eval_y)

    vae_dir = sub("vae")
    resuming_vae = resume and vae_dir is not None and (vae_dir / "checkpoints" / "latest").is_file()
    if cfg.pretrain_epochs and not resuming_vae:
        pre = TrainConfig(steps=cfg.pretrain_epochs * per_epoch, lr=cfg.lr, seed=cfg.seed, clip_norm=None,
                          log_every=per_epoch, ckpt_every=5 * per_epoch, progress=progress)
        def pre_loss(m, batch, g):
            return autoencoder_loss(m, random_affine(batch, g) if cfg.augment else batch)

        fit(model, pre_loss, TensorBatches(x, batch_size=cfg.batch_size, seed=cfg.seed),
            pre, sub("pretrain"), resume=resume, desc="pretrain AE")
    init = {}
    if cfg.gmm_init and not resuming_vae:
        init = gmm_initialise(model, x, cfg.gmm_restarts, cfg.seed, cfg.classifier_fit_steps,
                              spectral_neighbors=cfg.spectral_neighbors)
        init.update({f"init_{k}": v for k, v in eval_fn(model).items()})  # labels score only
        print(f"after GMM initialisation: test Hungarian acc {init['init_acc_hungarian']:.4f}", flush=True)
    main = TrainConfig(steps=cfg.epochs * per_epoch, lr=cfg.lr, seed=cfg.seed + 1, clip_norm=None,
                       log_every=per_epoch, eval_every=cfg.eval_every_epochs * per_epoch,
                       ckpt_every=5 * per_epoch, progress=progress)

    def loss_fn(m, batch, g):
        view = random_affine(batch, g) if cfg.augment else batch
        target = cluster_probs(m, batch) if cfg.consistency else None
        return cluster_vae_loss(m, view, g, cfg.kl, cfg.recon_weight, cfg.balance, cfg.batch_balance,
                                target, cfg.consistency)

    fit(model, loss_fn, TensorBatches(x, batch_size=cfg.batch_size, seed=cfg.seed + 1), main, vae_dir,
        eval_fn=eval_fn, resume=resume, desc="train VAE")
    if out_dir is not None:
        save_model(model, cfg, Path(out_dir), extra={"data": images.name, **init})
    return model


def save_model(model: ClusterVAE, cfg: VAEClusterConfig, folder: Path, extra: dict | None = None) -> None:
    """``model.safetensors`` + ``model.json`` (everything needed to rebuild the model)."""
    write_json(folder / "model.json", {"config": asdict(cfg), "image_size": list(model.image_size),
                                       "backbone": model.backbone, **(extra or {})})
    save_weights(model, folder / "model.safetensors")


def load_model(run: Path, device: str = "cpu") -> tuple[ClusterVAE, dict]:
    """Rebuild a trained model from a run folder written by ``train``."""
    run = Path(run)
    meta_path = run / "model.json"
    if not meta_path.is_file():
        raise KexueError(f"no trained model in {run} (missing model.json); run `kexue vae-cluster train` first")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = meta["config"]
        model = ClusterVAE(tuple(meta["image_size"]), cfg["latent_dim"], cfg["num_classes"], meta["backbone"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise KexueError(f"{meta_path} is malformed: {e}") from None
    load_weights(model, run / "model.safetensors")
    return model.to(_device(device)).eval(), meta


def figures_for(data: str, scores: dict[str, float], command: str) -> list[Figure]:
    out = []
    for metric in ("acc_hungarian", "acc_majority", "nmi", "ari"):
        published, source = PUBLISHED.get((data, metric), (None, None))
        out.append(Figure(f"vae.{data}.{metric}", scores[metric], published, source, command))
    return out


def plot_clusters(model: ClusterVAE, x: torch.Tensor, path: Path, per_cluster: int = 10,
                  seed: int = 0) -> Path:
    """A grid: row k holds up to ``per_cluster`` real images the model puts in cluster k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = model.predict(x.to(next(model.parameters()).device)).cpu()
    g = torch.Generator().manual_seed(seed)
    K = model.num_classes
    fig, axes = plt.subplots(K, per_cluster, figsize=(per_cluster * 0.6, K * 0.6))
    for k in range(K):
        members = torch.nonzero(pred == k).flatten()
        members = members[torch.randperm(len(members), generator=g)[:per_cluster]]
        for j in range(per_cluster):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(members):
                ax.imshow(x[members[j], 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[k, 0].set_title(f"{k}", fontsize=6, loc="left")
    fig.suptitle("real members of each cluster (row = cluster)", fontsize=8)
    return save_figure(fig, path)


def plot_samples(model: ClusterVAE, path: Path, per_class: int = 10, seed: int = 0) -> Path:
    """A grid: row y holds images decoded from z ~ N(μ_y, I)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = model.num_classes
    classes = torch.arange(K).repeat_interleave(per_class).to(model.class_means.device)
    imgs = model.sample(classes, torch.Generator(device=classes.device).manual_seed(seed)).cpu()
    fig, axes = plt.subplots(K, per_class, figsize=(per_class * 0.6, K * 0.6))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        ax.imshow(imgs[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    fig.suptitle("class-conditional samples, z ~ N(mu_y, I) (row = class)", fontsize=8)
    return save_figure(fig, path)


# ---- command-line entry points -------------------------------------------------------------

def train(data: str = "mnist5k", out: Path | None = None, settings: VAEClusterConfig = VAEClusterConfig(),
          resume: bool = False, device: str = "auto") -> dict:
    """Train the clustering VAE (labels are never used for training) and evaluate it on the test split.

    Args:
        data: digits, mnist5k, fashion_mnist, an IDX folder or an .npz file.
        out: run folder (default runs/vae-cluster-train-<time>/).
        settings: model and training settings (--settings.epochs 50, --settings.kl closed, ...).
        resume: continue from the checkpoints in --out.
        device: auto, cpu or cuda.
    """
    cfg = settings
    images = load_images(data)
    run = make_run_dir(out, "vae-cluster-train", {"data": data, "settings": asdict(cfg), "resume": resume,
                                                   "device": device})
    model = train_cluster_vae(images, cfg, run, resume=resume, device=device)
    scores = evaluate_model(model, images.test_x, images.test_y)
    write_json(run / "eval.json", scores)
    write_results(run / "results.json", figures_for(images.name, scores, f"kexue vae-cluster train --data {data}"))
    _print_scores(images.name, scores, run)
    return scores


def evaluate(run: Path, data: str | None = None, device: str = "cpu") -> dict:
    """Evaluate a trained run on the test split: Hungarian and majority accuracy, NMI, ARI.

    Args:
        run: the run folder written by `kexue vae-cluster train`.
        data: data set to evaluate on (default: the one it was trained on).
        device: cpu or cuda.
    """
    model, meta = load_model(run, device)
    images = load_images(data or meta.get("data", "mnist5k"))
    scores = evaluate_model(model, images.test_x, images.test_y)
    write_json(Path(run) / "eval.json", scores)
    _print_scores(images.name, scores, Path(run))
    return scores


def sample(run: Path, out: Path | None = None, per_class: int = 10, seed: int = 0, data: str | None = None) -> list[str]:
    """Write PNG grids: real members of each cluster and class-conditional samples z ~ N(μ_y, I).

    Args:
        run: the run folder written by `kexue vae-cluster train`.
        out: folder for the PNGs (default: the run folder).
        per_class: images per row.
        seed: seed of the sampled z.
        data: data set whose test images fill the cluster grid (default: the training one).
    """
    model, meta = load_model(run)
    folder = Path(out) if out is not None else Path(run)
    images = load_images(data or meta.get("data", "mnist5k"))
    paths = [plot_clusters(model, images.test_x, folder / "clusters.png", per_class, seed),
             plot_samples(model, folder / "samples.png", per_class, seed)]
    for p in paths:
        print(f"wrote {p}")
    return [str(p) for p in paths]


def _print_scores(name: str, scores: dict[str, float], run: Path) -> None:
    print(f"{name} test: Hungarian acc {scores['acc_hungarian']:.4f}  majority acc {scores['acc_majority']:.4f}  "
          f"NMI {scores['nmi']:.4f}  ARI {scores['ari']:.4f}  largest cluster {scores['largest_cluster_share']:.1%}")
    print(f"run folder: {run}")


def seed_summary(values: list[float]) -> dict[str, float]:
    """mean, population std and best of per-seed values."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "best": float(arr.max()), "n": len(arr)}


def run_seeds(data: str, cfg: VAEClusterConfig, seeds: list[int], out: Path, device: str = "auto",
              progress: bool = True) -> dict[str, list[float]]:
    """Train one model per seed under ``out/seed-<s>/`` (a finished seed is read back, an
    unfinished one resumes) and return the per-seed test scores, metric -> [value per seed]."""
    images = load_images(data)
    per_seed: dict[str, list[float]] = {}
    for seed in seeds:
        run = Path(out) / f"seed-{seed}"
        done = run / "eval.json"
        if done.is_file():
            scores = json.loads(done.read_text())
        else:
            seed_cfg = VAEClusterConfig(**{**asdict(cfg), "seed": seed})
            make_run_dir(run, "vae-cluster-train", {"data": data, **asdict(seed_cfg)})
            model = train_cluster_vae(images, seed_cfg, run, resume=True, device=device, progress=progress)
            scores = evaluate_model(model, images.test_x, images.test_y)
            write_json(done, scores)
        print(f"[{data} seed {seed}] Hungarian {scores['acc_hungarian']:.4f}  majority {scores['acc_majority']:.4f}",
              flush=True)
        info = run / "model.json"  # the scores right after the mixture initialisation, before VAE training
        if info.is_file():
            scores = {**scores, **{k: v for k, v in json.loads(info.read_text()).items()
                                   if k in ("init_acc_hungarian", "init_acc_majority")}}
        for k, v in scores.items():
            per_seed.setdefault(k, []).append(float(v))
    return per_seed


def seed_figures(data: str, per_seed: dict[str, list[float]], command: str) -> list[Figure]:
    """Mean over seeds as ``vae.<data>.<metric>``, plus ``_std`` and ``_best`` keys; ``init_acc_*`` (the
    scores right after the mixture initialisation) when every seed has them."""
    figures = []
    for metric in ("acc_hungarian", "acc_majority", "nmi", "ari"):
        s = seed_summary(per_seed[metric])
        published, source = PUBLISHED.get((data, metric), (None, None))
        figures += [Figure(f"vae.{data}.{metric}", s["mean"], published, source, command),
                    Figure(f"vae.{data}.{metric}_std", s["std"], None, None, command),
                    Figure(f"vae.{data}.{metric}_best", s["best"], published, source, command)]
    for metric in ("init_acc_hungarian", "init_acc_majority"):  # the mixture initialisation alone
        if len(per_seed.get(metric, [])) == len(per_seed["acc_hungarian"]):
            s = seed_summary(per_seed[metric])
            figures += [Figure(f"vae.{data}.{metric}", s["mean"], None, None, command),
                        Figure(f"vae.{data}.{metric}_std", s["std"], None, None, command)]
    return figures


def study(data: str = "mnist5k", seeds: str = "0,1,2,3,4", out: Path | None = None,
          results: Path | None = None, settings: VAEClusterConfig = VAEClusterConfig(), device: str = "auto") -> dict:
    """Train and evaluate several seeds; report mean ± std and best (resumable: rerun to continue).

    Args:
        data: digits, mnist5k, fashion_mnist, an IDX folder or an .npz file.
        seeds: comma-separated seeds.
        out: study folder (default runs/vae-cluster-study-<time>/); one sub-folder per seed.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/vae_cluster.json).
        settings: model and training settings shared by all seeds (--settings.epochs 50, ...).
        device: auto, cpu or cuda.
    """
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise KexueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if not seed_list:
        raise KexueError("--seeds is empty")
    run = make_run_dir(out, "vae-cluster-study", {"data": data, "seeds": seeds, "settings": asdict(settings)})
    per_seed = run_seeds(data, settings, seed_list, run, device)
    command = f"kexue vae-cluster study --data {data} --seeds {seeds} " + settings_flags(settings)
    figures = seed_figures(load_images(data).name, per_seed, command)
    write_results(run / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    write_json(run / "per_seed.json", per_seed)
    for metric in ("acc_hungarian", "acc_majority", "nmi", "ari"):
        s = seed_summary(per_seed[metric])
        print(f"{data} {metric}: {s['mean']:.4f} ± {s['std']:.4f} (best {s['best']:.4f}, {s['n']} seeds)")
    return per_seed


def settings_flags(cfg: VAEClusterConfig) -> str:
    """The ``--settings.x`` flags that differ from the defaults (to print the exact command)."""
    default = asdict(VAEClusterConfig())
    return " ".join(f"--settings.{k} {v}" for k, v in asdict(cfg).items() if k not in ("seed",) and default[k] != v)
