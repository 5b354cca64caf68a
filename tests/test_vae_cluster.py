import math

import pytest
import torch
from torch import nn

from kexue.analysis.clustering import (
    clustering_scores,
    contingency,
    hungarian_accuracy,
    majority_accuracy,
)
from kexue.data.images import ImageSet
from kexue.errors import KexueError
from kexue.models.vae_cluster import ClusterVAE, cluster_vae_loss, cluster_vae_terms
from kexue.recipes.vae_cluster import (
    VAEClusterConfig,
    evaluate_model,
    gmm_initialise,
    seed_figures,
    train_cluster_vae,
)


class Const(nn.Module):
    """Returns the same values for every example: (B, *shape)."""

    def __init__(self, *values, shape=None):
        super().__init__()
        self.register_buffer("v", torch.tensor(list(values)))
        self.shape = shape or (len(values),)

    def forward(self, x):
        return self.v.view(1, *self.shape).expand(len(x), *self.shape)


def _hand_model():
    """d = 1, K = 2, one pixel: μ = 1, log σ² = 0, x̂ = 0.25, μ_y = (0, 2), p(y|z) = (1/4, 3/4)."""
    m = ClusterVAE((1, 1), latent_dim=1, num_classes=2, backbone="mlp")
    m.encoder = Const(1.0, 0.0)
    m.decoder = Const(0.25, shape=(1, 1, 1))
    m.classifier = Const(0.0, math.log(3.0))
    with torch.no_grad():
        m.class_means.copy_(torch.tensor([[0.0], [2.0]]))
    return m


def test_loss_terms_match_hand_computation():
    m, x, eps = _hand_model(), torch.full((1, 1, 1, 1), 0.5), torch.tensor([[0.5]])  # z = 1.5
    closed = cluster_vae_terms(m, x, kl="closed", eps=eps)
    sampled = cluster_vae_terms(m, x, kl="sampled", eps=eps)
    assert closed["recon"].item() == pytest.approx(0.5 * 0.25**2)
    # closed: KL(N(1,1) || N(μ_y,1)) = ½(1 − μ_y)² = ½ for both classes
    assert closed["kl_z"].item() == pytest.approx(0.5)
    # sampled: ½(z − μ_y)² = 1.125, 0.125; weighted by (1/4, 3/4)
    assert sampled["kl_z"].item() == pytest.approx(0.25 * 1.125 + 0.75 * 0.125)
    assert closed["kl_y"].item() == pytest.approx(math.log(2) + 0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    loss, metrics = cluster_vae_loss(m, x, kl="closed", recon_weight=2.0, balance=False, generator=None)
    assert metrics["kl_z"] > 0 and torch.isfinite(loss)


def test_closed_form_is_the_mean_of_the_sampled_estimate():
    torch.manual_seed(0)
    m = ClusterVAE((4, 4), latent_dim=3, num_classes=4, backbone="mlp")
    with torch.no_grad():
        m.class_means.normal_()
    x = torch.rand(2, 1, 4, 4)
    mu, logvar = m.encode(x)
    # E_ε[log p(z|x) − log q(z|y)] = closed-form KL; the sampled form drops −½‖ε‖², whose mean is −d/2.
    eps = torch.randn(200_000, 3)
    z = mu[0] + torch.exp(0.5 * logvar[0]) * eps
    sampled = (-0.5 * (logvar[0] - (z - m.class_means[1]) ** 2)).sum(-1).mean() - 1.5
    closed = -0.5 * (1 + logvar[0] - (mu[0] - m.class_means[1]) ** 2 - logvar[0].exp()).sum()
    assert sampled.item() == pytest.approx(closed.item(), abs=0.02)


def test_accuracies_on_hand_made_confusion():
    clusters = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    labels = [0, 0, 1, 1, 1, 1, 2, 2, 2, 0]
    table = contingency(clusters, labels)
    assert table.tolist() == [[2, 1, 0], [0, 2, 0], [1, 1, 3]]
    assert majority_accuracy(clusters, labels) == pytest.approx((2 + 2 + 3) / 10)
    assert hungarian_accuracy(clusters, labels) == pytest.approx((2 + 2 + 3) / 10)
    # Many-to-one beats one-to-one when two clusters hold the same label.
    c2, y2 = [0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 2]
    assert majority_accuracy(c2, y2) == pytest.approx(5 / 6)
    assert hungarian_accuracy(c2, y2) == pytest.approx(3 / 6)
    s = clustering_scores(c2, y2)
    assert 0 < s["nmi"] < 1 and s["ari"] < 1


def test_bad_backbone_size_is_a_clear_error():
    with pytest.raises(KexueError, match="28×28"):
        ClusterVAE((32, 32), backbone="conv")
    m = ClusterVAE((28, 28))
    with pytest.raises(KexueError, match="expects 28×28"):
        m.encode(torch.zeros(1, 1, 8, 8))


def test_three_blobs_are_clustered():
    """The training recipe (AE pre-training, GMM init, VAE loss) separates three blobs."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(3, 16, generator=g).round()  # three binary 4×4 patterns
    labels = torch.arange(3).repeat_interleave(200)
    x = (centres[labels] * 0.8 + 0.1 + 0.05 * torch.randn(600, 16, generator=g)).clamp(0, 1).view(-1, 1, 4, 4)
    images = ImageSet("blobs", x[::2], labels[::2], x[1::2], labels[1::2])
    cfg = VAEClusterConfig(
        epochs=10,
        batch_size=50,
        lr=3e-3,
        latent_dim=4,
        num_classes=3,
        pretrain_epochs=10,
        gmm_restarts=2,
        classifier_fit_steps=100,
        spectral_neighbors=0,
        augment=False,
        consistency=0.0,
        balance=True,
        batch_balance=0.0,
    )
    model = train_cluster_vae(images, cfg, progress=False)
    scores = evaluate_model(model, images.test_x, images.test_y)
    assert scores["acc_hungarian"] >= 0.95


def test_consistency_term_is_the_cross_entropy_against_the_target():
    m, x = _hand_model(), torch.full((1, 1, 1, 1), 0.5)
    target = torch.tensor([[1.0, 0.0]])
    _, plain = cluster_vae_loss(m, x, balance=False)
    _, metrics = cluster_vae_loss(m, x, balance=False, target_probs=target, consistency=2.0)
    assert metrics["consistency"] == pytest.approx(-math.log(0.25))  # p(y=0|z) = 1/4 for any z
    assert "consistency" not in plain


def test_anchor_term_is_the_weighted_cross_entropy_against_the_fixed_partition():
    m, x = _hand_model(), torch.full((1, 1, 1, 1), 0.5)
    held = torch.tensor([[0.5, 0.5]])
    g = lambda: torch.Generator().manual_seed(0)  # the same z in both calls
    plain, without = cluster_vae_loss(m, x, g(), balance=False)
    loss, metrics = cluster_vae_loss(m, x, g(), balance=False, anchor_probs=held, anchor=3.0)
    ce = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))  # p(y|z) = (1/4, 3/4) for any z
    assert metrics["anchor"] == pytest.approx(ce) and "anchor" not in without
    assert (loss - plain).item() == pytest.approx(3.0 * ce, rel=1e-5)
    with pytest.raises(KexueError, match="settings.anchor"):
        VAEClusterConfig(anchor=-1.0)
    # without the mixture initialisation there is no partition to hold: the (default) anchor is unused
    from kexue.recipes.vae_cluster import _anchor_targets

    assert _anchor_targets(m, x, VAEClusterConfig(anchor=1.0, gmm_init=False), None, False) is None
    assert VAEClusterConfig().anchor == 10.0 and VAEClusterConfig(anchor=0.0).anchor == 0.0


def test_anchor_release_falls_linearly_to_zero():
    from kexue.recipes.vae_cluster import anchor_weight

    released = VAEClusterConfig(anchor=10.0, anchor_epochs=2)
    assert [anchor_weight(released, s, per_epoch=5) for s in (0, 1, 5, 9, 10, 30)] == pytest.approx(
        [10.0, 9.0, 5.0, 1.0, 0.0, 0.0]
    )
    held = VAEClusterConfig(anchor=10.0, anchor_epochs=None)
    assert anchor_weight(held, 1000, per_epoch=5) == 10.0  # held: no release
    assert VAEClusterConfig().anchor_epochs == 10  # ours: released over the first 10 of 30 VAE epochs
    assert anchor_weight(VAEClusterConfig(), 50, per_epoch=10) == pytest.approx(5.0)
    with pytest.raises(KexueError, match="anchor_epochs"):
        VAEClusterConfig(anchor_epochs=0)


@pytest.mark.parametrize("anchor_epochs", [None, 6])  # 6: resumed at step 30 of a 36-step release
def test_anchor_holds_the_initial_partition_and_resumes_exactly(tmp_path, monkeypatch, anchor_epochs):
    """The anchor's targets are the model's p(y|μ(x)) right after the initialisation, saved with the run;
    a run stopped in the VAE phase resumes from them (and mid-release, from the same point of the
    anchor's schedule) to the same weights as one that was not stopped."""
    from dataclasses import replace

    from safetensors.torch import load_file

    images = _blobs()
    cfg = replace(RESUME_CFG, anchor=5.0, anchor_epochs=anchor_epochs)
    train_cluster_vae(images, cfg, tmp_path / "straight", progress=False)
    targets = load_file(tmp_path / "straight" / "anchor.safetensors")["targets"]
    assert targets.shape == (len(images.train_x), 3)
    assert torch.allclose(targets.sum(1), torch.ones(len(targets)))
    with monkeypatch.context() as m:
        _interrupt(m, "cluster_vae_loss", after_calls=33)
        with pytest.raises(KeyboardInterrupt):
            train_cluster_vae(images, cfg, tmp_path / "resumed", progress=False)
    train_cluster_vae(images, cfg, tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "resumed" / "anchor.safetensors").unlink()
    with pytest.raises(KexueError, match="anchor.safetensors"):
        train_cluster_vae(images, replace(cfg, epochs=7), tmp_path / "resumed", resume=True, progress=False)


def test_seed_figures_mean_std_best_and_initialisation():
    per_seed = {
        "acc_hungarian": [0.5, 0.7],
        "acc_majority": [0.6, 0.8],
        "nmi": [0.1, 0.3],
        "ari": [0.2, 0.2],
        "init_acc_hungarian": [0.6, 0.4],
        "init_acc_majority": [0.7, 0.5],
    }
    figs = {f.key: f for f in seed_figures("mnist5k", per_seed, "cmd")}
    assert figs["vae.mnist5k.acc_hungarian"].value == pytest.approx(0.6)
    assert figs["vae.mnist5k.acc_hungarian_std"].value == pytest.approx(0.1)  # population std
    assert figs["vae.mnist5k.acc_hungarian_best"].value == pytest.approx(0.7)
    assert figs["vae.mnist5k.acc_hungarian"].published == pytest.approx(0.9446)
    assert figs["vae.mnist5k.init_acc_hungarian"].value == pytest.approx(0.5)
    assert figs["vae.mnist5k.init_acc_majority_std"].value == pytest.approx(0.1)
    # a seed without initialisation scores (no mixture init): no init figures rather than a partial mean
    partial = {**per_seed, "init_acc_hungarian": [0.6]}
    assert "vae.mnist5k.init_acc_hungarian" not in {f.key for f in seed_figures("mnist5k", partial, "cmd")}


def test_gmm_initialise_keeps_the_autoencoder():
    torch.manual_seed(0)
    model = ClusterVAE((4, 4), latent_dim=2, num_classes=2, backbone="mlp")
    x = torch.cat([torch.full((20, 1, 4, 4), 0.2), torch.full((20, 1, 4, 4), 0.8)]) + 0.05 * torch.randn(40, 1, 4, 4)
    with torch.no_grad():
        before = model.decoder(model.encode(x)[0])
    info = gmm_initialise(model, x, restarts=1, seed=0, fit_steps=5)
    with torch.no_grad():
        mu, _ = model.encode(x)
        # the rescaling of the latent space is exact: the autoencoder reconstructs as before
        torch.testing.assert_close(model.decoder(mu), before, rtol=1e-4, atol=1e-5)
    assert info["latent_scale"] > 0
    # μ_y sit inside the (rescaled) codes: one near each of the two groups
    centres = torch.stack([mu[:20].mean(0), mu[20:].mean(0)])
    nearest = torch.cdist(model.class_means.detach(), centres).argmin(1)
    assert sorted(nearest.tolist()) == [0, 1]


@pytest.mark.parametrize("manifold", ["spectral", "umap"])
def test_gmm_initialise_on_a_manifold_embedding_separates_two_groups(manifold):
    # UMAP returns float32 features: the responsibilities must still meet the float64 codes
    # (a real UMAP run; this once crashed with "expected m1 and m2 to have the same dtype")
    if manifold == "umap":
        pytest.importorskip("umap")
    torch.manual_seed(0)
    model = ClusterVAE((4, 4), latent_dim=2, num_classes=2, backbone="mlp")
    x = torch.cat([torch.full((40, 1, 4, 4), 0.2), torch.full((40, 1, 4, 4), 0.8)]) + 0.05 * torch.randn(80, 1, 4, 4)
    gmm_initialise(model, x, restarts=1, seed=0, fit_steps=50, spectral_neighbors=10, manifold=manifold)
    with torch.no_grad():
        pred = model.classifier(model.encode(x)[0]).argmax(-1)
    assert pred[:40].unique().numel() == 1 and pred[40:].unique().numel() == 1 and pred[0] != pred[-1]


def test_nt_xent_matches_a_hand_computation_and_prefers_agreeing_views():
    import math

    from kexue.models.vae_cluster import nt_xent

    e = torch.eye(2)
    # codes e1, e2, e1, e2: code 0's partner (code 2) has similarity 1, the other two 0
    assert nt_xent(e, e, temperature=1.0).item() == pytest.approx(-math.log(math.e / (2 + math.e)))
    assert nt_xent(e, e, 0.5) < nt_xent(e, e.flip(0), 0.5)  # views that agree score lower than swapped ones


def test_contrastive_pretraining_runs_and_the_setting_reaches_the_loss():
    from kexue.models.vae_cluster import contrastive_autoencoder_loss

    torch.manual_seed(0)
    model = ClusterVAE((4, 4), latent_dim=3, num_classes=2, backbone="mlp")
    x = torch.rand(8, 1, 4, 4)
    loss, metrics = contrastive_autoencoder_loss(model, x, x.flip(-1), weight=2.0)
    assert loss.item() == pytest.approx(metrics["recon"] + 2.0 * metrics["contrastive"], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(KexueError, match="contrastive"):
        VAEClusterConfig(contrastive=-1.0)
    with pytest.raises(KexueError, match="pretrain_epochs > 0"):
        VAEClusterConfig(contrastive=1.0, pretrain_epochs=0)


def test_keras_init_is_glorot_uniform_with_zero_biases():
    import math

    torch.manual_seed(0)
    model = ClusterVAE((28, 28), init="keras")
    first = model.encoder[0]  # Conv2d(1, 32, 3): fan_in 9, fan_out 288
    bound = math.sqrt(6 / (9 + 288))
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers)
    assert torch.count_nonzero(ClusterVAE((28, 28)).encoder[0].bias) > 0  # PyTorch's default draws biases
    with pytest.raises(KexueError, match="init"):
        VAEClusterConfig(init="glorot")


def _blobs(n=600):
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(3, 16, generator=g).round()  # three binary 4×4 patterns
    labels = torch.arange(3).repeat(n // 3)
    x = (centres[labels] * 0.8 + 0.1 + 0.05 * torch.randn(n, 16, generator=g)).clamp(0, 1).view(-1, 1, 4, 4)
    return ImageSet("blobs", x[::2], labels[::2], x[1::2], labels[1::2])


# 300 training images, batches of 50: 6 steps an epoch, a checkpoint every 5 epochs (30 steps).
RESUME_CFG = VAEClusterConfig(
    epochs=6,
    batch_size=50,
    lr=3e-3,
    latent_dim=4,
    num_classes=3,
    pretrain_epochs=6,
    gmm_restarts=1,
    classifier_fit_steps=20,
    spectral_neighbors=0,
    consistency=1.0,
    eval_every_epochs=2,
)


def _interrupt(monkeypatch, loss_name, after_calls):
    """Make the ``after_calls + 1``-th call of a loss function raise KeyboardInterrupt (a kill mid-phase)."""
    import kexue.recipes.vae_cluster as vc

    real, calls = getattr(vc, loss_name), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after_calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(vc, loss_name, wrapped)


@pytest.mark.parametrize("phase", ["autoencoder_loss", "cluster_vae_loss"])
def test_interrupted_training_resumes_bit_identically(tmp_path, monkeypatch, phase):
    """Stopped mid-phase (after the step-30 checkpoint), `resume` ends with exactly the weights, model.json
    (with the initialisation scores) and metrics of an uninterrupted run."""
    import json

    from safetensors.torch import load_file

    images = _blobs()
    train_cluster_vae(images, RESUME_CFG, tmp_path / "straight", progress=False)
    with monkeypatch.context() as m:
        _interrupt(m, phase, after_calls=33)
        with pytest.raises(KeyboardInterrupt):
            train_cluster_vae(images, RESUME_CFG, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "model.json").exists()
    train_cluster_vae(images, RESUME_CFG, tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "resumed" / "model.json").read_text())
    assert meta == json.loads((tmp_path / "straight" / "model.json").read_text()) and "init_acc_hungarian" in meta
    for part in ("pretrain", "vae"):
        assert (tmp_path / "resumed" / part / "metrics.jsonl").read_text() == (
            tmp_path / "straight" / part / "metrics.jsonl"
        ).read_text()


def test_resume_in_the_vae_phase_keeps_the_initialisation_scores(tmp_path):
    """A resume that skips the mixture initialisation used to drop init_acc_* from model.json."""
    import json
    from dataclasses import replace

    images, cfg = _blobs(), replace(RESUME_CFG, pretrain_epochs=1, epochs=1)
    train_cluster_vae(images, cfg, tmp_path, progress=False)
    before = json.loads((tmp_path / "model.json").read_text())
    assert json.loads((tmp_path / "init.json").read_text())["init_acc_hungarian"] == before["init_acc_hungarian"]
    train_cluster_vae(images, replace(cfg, epochs=2), tmp_path, resume=True, progress=False)
    after = json.loads((tmp_path / "model.json").read_text())
    assert after["config"]["epochs"] == 2
    assert {k: after[k] for k in before if k.startswith("init_")} == {
        k: v for k, v in before.items() if k.startswith("init_")
    }


def test_resume_needs_a_checkpoint_and_settings_are_checked(tmp_path):
    images = _blobs()
    with pytest.raises(KexueError, match="no checkpoint to resume from"):
        train_cluster_vae(images, RESUME_CFG, tmp_path, resume=True, progress=False)
    with pytest.raises(KexueError, match="batch_size"):
        train_cluster_vae(images, VAEClusterConfig(batch_size=301), progress=False)
    with pytest.raises(KexueError, match="spectral_neighbors"):
        train_cluster_vae(images, VAEClusterConfig(batch_size=50, spectral_neighbors=300), progress=False)
    for bad in (
        {"epochs": 0},
        {"lr": float("nan")},
        {"recon_weight": 0},
        {"kl": "exact"},
        {"num_classes": 1},
        {"backbone": "resnet"},
        {"seed": -1},
        {"consistency": -1.0},
        {"gmm_init": "yes"},
    ):
        with pytest.raises(KexueError, match=f"settings.{next(iter(bad))}"):
            VAEClusterConfig(**bad)


def test_learned_prior_terms_match_hand_computation():
    """VaDE's prior: σ_0² = 4, σ_1² = 1, q(y) = (1/3, 2/3); same encoder as _hand_model (μ = 1, σ² = 1)."""
    m, x, eps = _hand_model(), torch.full((1, 1, 1, 1), 0.5), torch.tensor([[0.5]])  # z = 1.5
    learned = ClusterVAE((1, 1), latent_dim=1, num_classes=2, backbone="mlp", prior="learned")
    learned.load_state_dict(m.state_dict(), strict=False)
    learned.encoder, learned.decoder, learned.classifier = m.encoder, m.decoder, m.classifier
    # at its zero initialisation the learned prior is Su's: the same terms
    for kl in ("closed", "sampled"):
        a, b = cluster_vae_terms(m, x, kl=kl, eps=eps), cluster_vae_terms(learned, x, kl=kl, eps=eps)
        assert all(a[k].item() == pytest.approx(b[k].item(), abs=1e-7) for k in ("recon", "kl_z", "kl_y"))
    with torch.no_grad():
        learned.class_logvar.copy_(torch.tensor([[math.log(4.0)], [0.0]]))
        learned.prior_logits.copy_(torch.tensor([0.0, math.log(2.0)]))
    closed = cluster_vae_terms(learned, x, kl="closed", eps=eps)
    sampled = cluster_vae_terms(learned, x, kl="sampled", eps=eps)
    # KL(N(1,1) || N(0,4)) = ½(log 4 + 2/4 − 1); KL(N(1,1) || N(2,1)) = ½(2 − 1)
    kl0, kl1 = 0.5 * (math.log(4) + 0.5 - 1), 0.5
    assert closed["kl_z"].item() == pytest.approx(0.25 * kl0 + 0.75 * kl1)
    # sampled at z = 1.5: −½(0 − log 4 − 1.5²/4) and −½(0 − 0 − 0.5²)
    s0, s1 = 0.5 * (math.log(4) + 2.25 / 4), 0.5 * 0.25
    assert sampled["kl_z"].item() == pytest.approx(0.25 * s0 + 0.75 * s1)
    # KL(p(y|z) || q(y)) with p = (1/4, 3/4), q = (1/3, 2/3)
    assert closed["kl_y"].item() == pytest.approx(0.25 * math.log(0.25 * 3) + 0.75 * math.log(0.75 * 1.5), rel=1e-5)
    with pytest.raises(KexueError, match="prior"):
        ClusterVAE((1, 1), latent_dim=1, num_classes=2, backbone="mlp", prior="vade")


def test_learned_prior_samples_with_the_class_variance():
    m = ClusterVAE((1, 1), latent_dim=1, num_classes=2, backbone="mlp", prior="learned")
    m.decoder = nn.Identity()
    with torch.no_grad():
        m.class_means.copy_(torch.tensor([[0.0], [10.0]]))
        m.class_logvar.copy_(torch.tensor([[math.log(9.0)], [math.log(0.01)]]))
    z = m.sample(torch.tensor([0] * 4000 + [1] * 4000), torch.Generator().manual_seed(0))[:, 0]
    assert z[:4000].std().item() == pytest.approx(3.0, rel=0.05)
    assert z[4000:].std().item() == pytest.approx(0.1, rel=0.05) and z[4000:].mean().item() == pytest.approx(
        10, abs=0.01
    )


def test_sharpen_is_decs_target_distribution():
    from kexue.models.vae_cluster import sharpen

    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    # f = (1.4, 0.6); row 0: (0.25/1.4, 0.25/0.6) -> (0.3, 0.7); row 1: (0.81/1.4, 0.01/0.6) -> (0.972, 0.028)
    assert torch.allclose(sharpen(p), torch.tensor([[0.3, 0.7], [0.972, 0.028]]), atol=1e-6)
    m, x = _hand_model(), torch.full((1, 1, 1, 1), 0.5)
    target = torch.tensor([[0.5, 0.5]])  # one row: f = (0.5, 0.5), sharpened stays (0.5, 0.5)
    base, _ = cluster_vae_loss(m, x, generator=torch.Generator().manual_seed(0), kl="closed")
    loss, metrics = cluster_vae_loss(
        m, x, generator=torch.Generator().manual_seed(0), kl="closed", target_probs=target, self_training=2.0
    )
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL((½, ½) || (¼, ¾))
    assert metrics["self_training"] == pytest.approx(expected)
    assert loss.item() == pytest.approx(base.item() + 2.0 * expected, rel=1e-6)


def test_su2018_preset_is_the_authors_setting():
    from dataclasses import replace

    from kexue.recipes.vae_cluster import DEFAULT_SETTINGS, key_prefix, preset_settings

    author = VAEClusterConfig(
        epochs=50, batch_size=100, lr=1e-3, latent_dim=20, num_classes=10, kl="closed", recon_weight=5.0,
        balance=True, batch_balance=0.0, pretrain_epochs=0, gmm_init=False, spectral_neighbors=0, consistency=0.0,
        augment=False, prior="unit", self_training=0.0, contrastive=0.0, manifold="spectral", anchor=0.0,
    )  # fmt: skip
    assert preset_settings("su2018") == author
    assert preset_settings("su2018", epochs=5, seed=3) == replace(author, epochs=5, seed=3)
    assert preset_settings("ours", epochs=5) == replace(DEFAULT_SETTINGS, epochs=5)
    assert key_prefix("su2018", "mnist5k") == "vae.su2018.mnist5k" and key_prefix("ours", "mnist5k") == "vae.mnist5k"
    with pytest.raises(KexueError, match="preset"):
        preset_settings("su2019")


def test_umap_without_umap_learn_is_one_clear_error(monkeypatch):
    import sys

    import numpy as np

    from kexue.recipes.vae_cluster import manifold_embedding

    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(KexueError, match=r"umap-learn .*kexue\[umap\]"):
        manifold_embedding(np.zeros((20, 3)), 2, 5, 0, "umap")
    spectral = manifold_embedding(np.random.RandomState(0).randn(60, 3), 2, 5, 0, "spectral")
    assert spectral.shape == (60, 2)


def test_a_run_from_another_runs_pretraining_continues_as_if_it_had_pretrained(tmp_path, monkeypatch):
    """--pretrained: a lever of the VAE phase started from the base study's finished pre-training ends with
    exactly the weights and initialisation of the same lever pre-trained on its own, and pre-trains nothing."""
    import json
    import shutil
    from dataclasses import replace

    from safetensors.torch import load_file

    from kexue.recipes.vae_cluster import run_seeds

    images = _blobs()
    base = replace(RESUME_CFG, epochs=2)
    lever = replace(base, consistency=0.0, self_training=1.0)  # differs after the pre-training only
    run_seeds("blobs", base, [0], tmp_path / "base", progress=False, images=images)
    run_seeds("blobs", lever, [0], tmp_path / "alone", progress=False, images=images)
    run_seeds("blobs", lever, [0], tmp_path / "shared", progress=False, images=images, pretrained=tmp_path / "base")
    a, b = (load_file(tmp_path / name / "seed-0" / "model.safetensors") for name in ("alone", "shared"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    init = [json.loads((tmp_path / name / "seed-0" / "init.json").read_text()) for name in ("alone", "shared")]
    assert init[0] == init[1]
    copied = tmp_path / "shared" / "seed-0" / "pretrain"  # nothing pre-trained again: the source's, copied
    assert json.loads((copied / "source.json").read_text())["pretrained"] == str(tmp_path / "base" / "seed-0")
    assert (copied / "metrics.jsonl").read_text() == (
        tmp_path / "base" / "seed-0" / "pretrain" / "metrics.jsonl"
    ).read_text()
    assert "pretrained" in (tmp_path / "shared" / "seed-0" / "config.yaml").read_text()
    # the copy makes the run self-contained: it serves as a source itself, with the source gone
    shutil.move(tmp_path / "base", tmp_path / "gone")
    run_seeds("blobs", lever, [0], tmp_path / "chained", progress=False, images=images, pretrained=tmp_path / "shared")
    c = load_file(tmp_path / "chained" / "seed-0" / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    shutil.move(tmp_path / "gone", tmp_path / "base")
    # a run stopped before its first VAE checkpoint resumes (its pre-training is in its own folder)
    stopped = tmp_path / "shared" / "seed-0"
    for name in ("model.safetensors", "model.json", "eval.json", "vae"):
        shutil.rmtree(stopped / name) if (stopped / name).is_dir() else (stopped / name).unlink()
    train_cluster_vae(images, lever, stopped, resume=True, progress=False)
    d = load_file(stopped / "model.safetensors")
    assert all(torch.equal(a[k], d[k]) for k in a)

    out = tmp_path / "new"
    with pytest.raises(KexueError, match=r"latent_dim 4 \(here 5\)"):
        train_cluster_vae(
            images, replace(lever, latent_dim=5), out, pretrained=tmp_path / "base" / "seed-0", progress=False
        )
    with pytest.raises(KexueError, match="pre-trained on blobs, not on other"):
        train_cluster_vae(
            replace(images, name="other"), lever, out, pretrained=tmp_path / "base" / "seed-0", progress=False
        )
    # a resume that continues the pre-training with another lr makes it nobody's pre-training
    mixed = tmp_path / "mixed"
    with monkeypatch.context() as m:
        _interrupt(m, "autoencoder_loss", after_calls=33)
        with pytest.raises(KeyboardInterrupt):
            train_cluster_vae(images, base, mixed, progress=False)
    (mixed / "config.yaml").write_text((tmp_path / "base" / "seed-0" / "config.yaml").read_text())
    train_cluster_vae(images, replace(base, lr=1e-3), mixed, resume=True, progress=False)
    with pytest.raises(KexueError, match="lr 'changed on a resume'"):
        train_cluster_vae(images, lever, out, pretrained=mixed, progress=False)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tmp_path / "base" / "seed-0", unfinished)
    ckpts = unfinished / "pretrain" / "checkpoints"
    shutil.rmtree(sorted(ckpts.glob("step-*"))[-1])
    (ckpts / "latest").unlink()
    with pytest.raises(KexueError, match="has not finished"):
        train_cluster_vae(images, lever, out, pretrained=unfinished, progress=False)


def test_umap_leaves_no_busy_numba_pool_beside_torch():
    """numba's pool of one thread per core busy-waits after UMAP and slowed the VAE phase 7-10x on a shared
    CPU: the embedding gives numba one thread, unless the user set NUMBA_NUM_THREADS (their choice stays)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("umap")
    code = (
        "import numpy as np\n"
        "from kexue.recipes.vae_cluster import manifold_embedding\n"
        "manifold_embedding(np.random.RandomState(0).randn(200, 5), 2, 10, 0, 'umap')\n"
        "import numba; print(numba.config.NUMBA_NUM_THREADS)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    for chosen, threads in ((None, "1"), ("2", "2")):
        extra = {} if chosen is None else {"NUMBA_NUM_THREADS": chosen}
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == threads
