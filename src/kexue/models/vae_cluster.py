"""Clustering VAE with a Gaussian-mixture prior (Su, kexue.fm/archives/5887).

Inference p(z|x) = N(μ(x), diag σ²(x)) and a classifier p(y|z); generation q(z|y) = N(μ_y, I)
with learnable class means, uniform q(y), and a decoder G(z). Per-example loss (Su's post,
kexue.fm/archives/5887):

    L(x) = λ·Σ_pixels ½(x − G(z))²  +  Σ_y p(y|z)·log[p(z|x)/q(z|y)]  +  KL(p(y|z) ‖ q(y))

Clustering: y* = argmax_y p(y | μ(x)). Generation: z ~ N(μ_y, I), x = G(z).

The middle term has two variants: ``kl="closed"`` (2018 code, an exact Gaussian KL per class)
and ``kl="sampled"`` (Su's Dec-2018 revision, a one-sample estimate). ``prior="learned"`` (an
option beside Su's, from VaDE, Jiang et al. 2017) makes the prior q(z|y) = N(μ_y, diag σ_y²) with
a learnable log σ_y² per class (zero-initialised: Su's unit variance at the start) and q(y) =
softmax(π) with learnable logits π (zero-initialised: uniform). The architecture follows
the author's Keras code: two conv blocks (32, 64 filters) for 28×28 images, and an MLP for any
other size (e.g. 8×8 digits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kexue.errors import KexueError


def conv_encoder(latent_dim: int) -> nn.Module:
    """28×28×1 -> (B, 2·latent_dim): two blocks [conv s2, conv s1] of 32 and 64 filters."""
    act = nn.LeakyReLU(0.2)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, stride=2, padding=1),
        act,  # (B, 32, 14, 14)
        nn.Conv2d(32, 32, 3, padding=1),
        act,
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        act,  # (B, 64, 7, 7)
        nn.Conv2d(64, 64, 3, padding=1),
        act,
        nn.Flatten(),  # (B, 3136)
        nn.Linear(7 * 7 * 64, 2 * latent_dim),  # μ and log σ², concatenated
    )


def conv_decoder(latent_dim: int) -> nn.Module:
    """(B, latent_dim) -> (B, 1, 28, 28) in [0, 1], mirroring the encoder."""
    act = nn.LeakyReLU(0.2)
    return nn.Sequential(
        nn.Linear(latent_dim, 7 * 7 * 64),
        nn.Unflatten(1, (64, 7, 7)),  # (B, 64, 7, 7)
        nn.ConvTranspose2d(64, 64, 3, padding=1),
        act,
        nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1),
        act,  # (B, 64, 14, 14)
        nn.ConvTranspose2d(64, 32, 3, padding=1),
        act,
        nn.ConvTranspose2d(32, 32, 3, stride=2, padding=1, output_padding=1),
        act,  # (B, 32, 28, 28)
        nn.ConvTranspose2d(32, 1, 3, padding=1),
        nn.Sigmoid(),
    )


def mlp_encoder(pixels: int, latent_dim: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(pixels, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 2 * latent_dim),
    )


def mlp_decoder(size: tuple[int, int], latent_dim: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, size[0] * size[1]),
        nn.Sigmoid(),
        nn.Unflatten(1, (1, *size)),
    )


def keras_init(module: nn.Module) -> None:
    """Keras's default initialisation, in place: Glorot-uniform weights and zero biases for every
    dense, convolution and transposed-convolution layer (the author's code ran with these; PyTorch's
    own default draws weights and biases uniformly within ±1/√fan_in instead)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)  # U(±√(6 / (fan_in + fan_out))), Keras's glorot_uniform
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ClusterVAE(nn.Module):
    """Encoder p(z|x), classifier p(y|z), class means μ_y and decoder G(z).

    Args:
        image_size: (H, W); 28×28 uses the conv backbone unless ``backbone="mlp"``.
        latent_dim: d, the size of z (author: 20).
        num_classes: K (author: 10).
        backbone: ``"auto"`` (conv for 28×28, MLP otherwise), ``"conv"`` or ``"mlp"``.
        classifier_hidden: width of the classifier's hidden layer (author: 256).
        prior: ``"unit"`` (Su: q(z|y) = N(μ_y, I), uniform q(y)) or ``"learned"`` (VaDE's prior:
            a learnable diagonal variance per class and learnable mixing weights).
    Example: ``ClusterVAE((28, 28)).encode(x)`` -> ``(mu, logvar)``, each (B, 20).
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (28, 28),
        latent_dim: int = 20,
        num_classes: int = 10,
        backbone: str = "auto",
        classifier_hidden: int = 256,
        prior: str = "unit",
        init: str = "torch",
    ):
        super().__init__()
        if prior not in ("unit", "learned"):
            raise KexueError(f"prior must be unit or learned, got {prior!r}")
        image_size = tuple(image_size)
        if backbone == "auto":
            backbone = "conv" if image_size == (28, 28) else "mlp"
        if backbone == "conv" and image_size != (28, 28):
            raise KexueError(
                f"the conv backbone needs 28×28 images, got {image_size[0]}×{image_size[1]}; use --backbone mlp"
            )
        if backbone not in ("conv", "mlp"):
            raise KexueError(f"backbone must be auto, conv or mlp, got {backbone!r}")
        if num_classes < 2 or latent_dim < 1:
            raise KexueError("need num_classes >= 2 and latent_dim >= 1")
        self.image_size, self.latent_dim, self.num_classes, self.backbone = (
            image_size,
            latent_dim,
            num_classes,
            backbone,
        )
        pixels = image_size[0] * image_size[1]
        self.encoder = conv_encoder(latent_dim) if backbone == "conv" else mlp_encoder(pixels, latent_dim)
        self.decoder = conv_decoder(latent_dim) if backbone == "conv" else mlp_decoder(image_size, latent_dim)
        self.classifier = nn.Sequential(
            nn.Linear(latent_dim, classifier_hidden), nn.ReLU(), nn.Linear(classifier_hidden, num_classes)
        )
        self.class_means = nn.Parameter(torch.zeros(num_classes, latent_dim))  # μ_y, zero-initialised
        self.prior = prior
        if prior == "learned":  # log σ_y² and mixing logits π: Su's unit variance and uniform q(y) at the start
            self.class_logvar = nn.Parameter(torch.zeros(num_classes, latent_dim))
            self.prior_logits = nn.Parameter(torch.zeros(num_classes))
        if init not in ("torch", "keras"):
            raise KexueError(f"init must be torch or keras, got {init!r}")
        if init == "keras":
            keras_init(self)

    def prior_log_weights(self) -> torch.Tensor:
        """log q(y): (K,); uniform for Su's prior."""
        if self.prior == "learned":
            return F.log_softmax(self.prior_logits, -1)
        return torch.full((self.num_classes,), -math.log(self.num_classes), device=self.class_means.device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) -> μ (B, d), log σ² (B, d)."""
        if tuple(x.shape[-2:]) != self.image_size:
            raise KexueError(
                f"model expects {self.image_size[0]}×{self.image_size[1]} images, got {x.shape[-2]}×{x.shape[-1]}"
            )
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def forward(
        self,
        x: torch.Tensor,
        eps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        autoencoder: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Everything the losses need, in one call (so that a DDP wrapper sees every parameter used).

        Args:
            x: images (B, 1, H, W).
            eps: a fixed ε (B, d) for z = μ + σ∘ε; drawn from ``generator`` when None.
            autoencoder: decode μ itself (pre-training): no sampling, no classifier.
        Returns:
            ``mu``, ``logvar`` (B, d); ``z`` (B, d); ``x_hat`` (B, 1, H, W); unless ``autoencoder``:
            ``logits`` of p(y|z) (B, K) and ``offsets`` z − μ_y and μ − μ_y, each (B, K, d).
        """
        mu, logvar = self.encode(x)  # (B, d) each
        if autoencoder:
            return {"mu": mu, "logvar": logvar, "z": mu, "x_hat": self.decoder(mu)}
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation
        means = self.class_means.unsqueeze(0)  # (1, K, d)
        return {
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "x_hat": self.decoder(z),
            "logits": self.classifier(z),
            "z_offsets": z.unsqueeze(1) - means,
            "mu_offsets": mu.unsqueeze(1) - means,
            **({"prior_logvar": self.class_logvar} if self.prior == "learned" else {}),
        }

    def class_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of p(y|z): (B, K)."""
        return self.classifier(z)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Cluster of each image: argmax_y p(y | μ(x)); (N,) int64."""
        was = self.training
        self.eval()
        out = [self.class_logits(self.encode(xb)[0]).argmax(-1) for xb in x.split(batch_size)]
        self.train(was)
        return torch.cat(out)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """μ(x) for every image: (N, d)."""
        return torch.cat([self.encode(xb)[0] for xb in x.split(batch_size)])

    @torch.no_grad()
    def sample(self, classes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class-conditional images: z ~ N(μ_y, I) (or N(μ_y, σ_y²)), x = G(z); classes (N,) -> (N, 1, H, W)."""
        mu = self.class_means[classes]
        std = torch.exp(0.5 * self.class_logvar[classes]) if self.prior == "learned" else torch.ones_like(mu)
        gen_device = generator.device if generator is not None else mu.device  # a CPU generator may drive a GPU model
        z = mu + std * torch.randn(mu.shape, generator=generator, device=gen_device).to(mu.device)
        return self.decoder(z)


def cluster_vae_terms(
    model: ClusterVAE,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    kl: str = "sampled",
    eps: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The three loss terms of eq. (L), each averaged over the batch (reductions as in the author code).

    Args:
        model: the VAE.
        x: images (B, 1, H, W) in [0, 1].
        generator: draws ε for z = μ + σ∘ε.
        kl: ``"closed"`` (exact Gaussian KL per class) or ``"sampled"`` (one-sample estimate).
        eps: a fixed ε (B, d) instead of a draw (tests use it).
    Returns:
        ``recon`` Σ_pixels ½(x − x̂)², ``kl_z`` Σ_y p(y|z)·log p(z|x)/q(z|y) (estimate), ``kl_y``
        KL(p(y|z) ‖ uniform) (these three averaged over the batch), and per example ``probs`` and
        ``log_probs`` of p(y|z) (B, K) and ``z`` (B, d).
    """
    out = model(x, eps=eps, generator=generator)  # model or its DDP wrapper
    logvar, z = out["logvar"], out["z"]  # (B, d) each
    recon = 0.5 * (x - out["x_hat"]).pow(2).flatten(1).sum(1)  # (B,)
    log_probs = F.log_softmax(out["logits"], dim=-1)  # (B, K)
    probs = log_probs.exp()
    sq = out["mu_offsets" if kl == "closed" else "z_offsets"].pow(2)  # (B, K, d): (μ or z − μ_y)²
    core = getattr(model, "module", model)  # the prior's parameters, through a DDP wrapper
    if "prior_logvar" in out:  # VaDE's prior: q(z|y) = N(μ_y, diag σ_y²)
        prior_logvar = out["prior_logvar"].unsqueeze(0)  # (1, K, d)
    else:
        prior_logvar = torch.zeros((), device=sq.device, dtype=sq.dtype)  # Su: σ_y² = 1
    if kl == "closed":
        # KL(N(μ, σ²) ‖ N(μ_y, σ_y²)) = ½ Σ_d [log σ_y² − log σ² + (σ² + (μ − μ_y)²) / σ_y² − 1]
        var = logvar.exp().unsqueeze(1)
        per_class = 0.5 * (prior_logvar - logvar.unsqueeze(1) + (var + sq) / prior_logvar.exp() - 1).sum(-1)
    elif kl == "sampled":
        # log p(z|x) − log q(z|y) ≈ −½ Σ_d [log σ² − log σ_y² − (z − μ_y)² / σ_y²]   (Su's revision; constants dropped)
        per_class = -0.5 * (logvar.unsqueeze(1) - prior_logvar - sq / prior_logvar.exp()).sum(-1)  # (B, K)
    else:
        raise KexueError(f"kl must be 'closed' or 'sampled', got {kl!r}")
    kl_z = (probs * per_class).sum(-1)  # (B,)
    kl_y = (probs * (log_probs - core.prior_log_weights())).sum(-1)  # KL(p(y|z) ‖ q(y))
    return {
        "recon": recon.mean(),
        "kl_z": kl_z.mean(),
        "kl_y": kl_y.mean(),
        "probs": probs,
        "log_probs": log_probs,
        "z": z,
    }


def cluster_vae_loss(
    model: ClusterVAE,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    kl: str = "sampled",
    recon_weight: float = 2.5,
    balance: bool = True,
    batch_balance: float = 0.0,
    target_probs: torch.Tensor | None = None,
    consistency: float = 0.0,
    self_training: float = 0.0,
    anchor_probs: torch.Tensor | None = None,
    anchor: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """λ·recon + kl_z + kl_y (+ optional extensions); returns (loss, metrics).

    Args:
        recon_weight: λ (2018 code: 5; revision: 2.5).
        balance: include KL(p(y|z) ‖ q(y)) (Su calls it optional).
        batch_balance: weight of KL(mean_batch p(y|z) ‖ uniform). An extension, not in the
            sources: it enforces equal cluster sizes at the batch level. 0 turns it off.
        target_probs: (B, K) cluster probabilities of the clean images, see :func:`cluster_probs`.
        consistency: weight of the cross-entropy of p(y|z(x)) against ``target_probs``, when
            ``x`` is an augmented view (an extension: a cluster should survive a small shift).
        self_training: weight of KL(sharpen(target_probs) ‖ p(y|z)), DEC's self-training towards
            confident assignments (Xie et al. 2016; :func:`sharpen`). An extension; 0 = off.
        anchor_probs: (B, K) fixed cluster probabilities of these images (the initial partition).
        anchor: weight of the cross-entropy of p(y|z) against ``anchor_probs``. An extension; 0 = off.
    """
    t = cluster_vae_terms(model, x, generator, kl)
    loss = recon_weight * t["recon"] + t["kl_z"] + (t["kl_y"] if balance else 0.0)
    metrics = {"recon": t["recon"].item(), "kl_z": t["kl_z"].item(), "kl_y": t["kl_y"].item()}
    if batch_balance:
        mean_p = t["probs"].mean(0).clamp_min(1e-8)
        kl_batch = (mean_p * mean_p.log()).sum() + math.log(mean_p.shape[-1])
        loss = loss + batch_balance * kl_batch
        metrics["kl_batch"] = kl_batch.item()
    if consistency and target_probs is not None:
        cross_entropy = -(target_probs * t["log_probs"]).sum(-1).mean()
        loss = loss + consistency * cross_entropy
        metrics["consistency"] = cross_entropy.item()
    if self_training and target_probs is not None:
        q = sharpen(target_probs)
        kl_target = (q * (q.clamp_min(1e-12).log() - t["log_probs"])).sum(-1).mean()
        loss = loss + self_training * kl_target
        metrics["self_training"] = kl_target.item()
    if anchor and anchor_probs is not None:
        held = -(anchor_probs * t["log_probs"]).sum(-1).mean()
        loss = loss + anchor * held
        metrics["anchor"] = held.item()
    return loss, metrics


def sharpen(probs: torch.Tensor) -> torch.Tensor:
    """DEC's target distribution (Xie et al. 2016, eq. 3): q_ik ∝ p_ik² / f_k with f_k = Σ_i p_ik.

    Squaring favours confident assignments; dividing by the soft cluster size f_k keeps large
    clusters from swallowing the rest. ``probs`` (B, K) rows sum to 1; returns (B, K), no gradient.
    DEC sums f_k over the whole data set and refreshes the target every few iterations; the VAE
    recipe applies this to each batch (f_k over the batch's rows), a per-batch approximation.
    """
    p = probs.detach()
    weight = p.pow(2) / p.sum(0, keepdim=True).clamp_min(1e-12)
    return weight / weight.sum(1, keepdim=True)


@torch.no_grad()
def cluster_probs(model: ClusterVAE, x: torch.Tensor) -> torch.Tensor:
    """p(y | μ(x)) without gradient: (B, K); the teacher side of the consistency term."""
    model = getattr(model, "module", model)  # no gradient, so no need to go through a DDP wrapper
    return F.softmax(model.class_logits(model.encode(x)[0]), dim=-1)


def autoencoder_loss(model: ClusterVAE, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Pre-training loss: deterministic autoencoder through μ(x) (no sampling, no prior)."""
    out = model(x, autoencoder=True)  # model or its DDP wrapper
    recon = 0.5 * (x - out["x_hat"]).pow(2).flatten(1).sum(1).mean()
    return recon, {"recon": recon.item()}


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020): row i of ``a`` and row i of ``b`` are two views of one image.

    Each of the 2B codes is classified, by cosine similarity / ``temperature``, against the other
    2B - 1 codes; its own other view is the right answer. Returns the mean cross-entropy (a scalar).
    """
    z = F.normalize(torch.cat([a, b]), dim=-1)  # (2B, d)
    sim = z @ z.T / temperature
    n = len(a)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # not itself
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def contrastive_autoencoder_loss(
    model: ClusterVAE, view1: torch.Tensor, view2: torch.Tensor, weight: float, temperature: float = 0.5
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pre-training with a contrastive term (an extension): the autoencoder loss on both views plus
    ``weight`` · NT-Xent between their codes μ, so that codes ignore what the augmentation changes."""
    x = torch.cat([view1, view2])
    out = model(x, autoencoder=True)  # one call: a DDP wrapper sees every parameter used
    recon = 0.5 * (x - out["x_hat"]).pow(2).flatten(1).sum(1).mean()
    n = len(view1)
    contrast = nt_xent(out["mu"][:n], out["mu"][n:], temperature)
    return recon + weight * contrast, {"recon": recon.item(), "contrastive": contrast.item()}
