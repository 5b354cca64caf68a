"""``kexue nystrom listops``: train a Nyströmformer and an exact-attention Transformer of the same
size on generated ListOps and compare their test accuracies (paper, LRA: 37.15 vs 37.10)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kexue.data import listops as lo
from kexue.errors import KexueError
from kexue.io import make_run_dir, write_json
from kexue.models.nystromformer import NystromformerClassifier, accuracy, classification_loss
from kexue.results import Figure, write_results
from kexue.training import TensorBatches, TrainConfig, fit

PAPER = "Xiong et al. 2021, Table 3 (LRA ListOps, 64 landmarks, lengths 500-2000)"
PUBLISHED = {"nystrom": 37.15, "exact": 37.10}


def listops(attention: str = "both", steps: int = 2000, batch_size: int = 32, lr: float = 2e-3,
            train_size: int = 10000, test_size: int = 1000, min_len: int = 60, max_len: int = 160,
            max_depth: int = 10, max_args: int = 10, dim: int = 64, depth: int = 2, heads: int = 2,
            num_landmarks: int = 16, conv_kernel: int | None = 35, exact_conv: bool = False, dropout: float = 0.0,
            threads: int = 1, seed: int = 0, results: Path | None = None, out: Path | None = None,
            resume: bool = False) -> dict[str, float]:
    """Train on generated ListOps with Nyström and/or exact attention; report test accuracy (%).

    Args:
        attention: ``nystrom``, ``exact`` or ``both``.
        steps: optimizer steps per model.
        batch_size: sequences per step.
        lr: peak learning rate (AdamW, 5% warm-up, cosine decay).
        train_size: training expressions.
        test_size: test expressions (drawn with another seed).
        min_len: shortest expression in tokens.
        max_len: longest expression in tokens (LRA: 2000).
        max_depth: deepest nesting (LRA: 10).
        max_args: most arguments per operator (LRA: 10).
        dim: model width.
        depth: encoder blocks.
        heads: attention heads.
        num_landmarks: Nyström landmarks m.
        conv_kernel: depthwise-conv skip kernel of the Nyström blocks (LRA: 35), or None (results key
            ``acc_nystrom_no_conv``).
        exact_conv: give the exact blocks the same conv skip, so that the models differ only in the
            attention core (results key ``acc_exact_conv``; the paper's baseline has none).
        dropout: dropout rate in the blocks.
        threads: CPU threads for torch (1 is fastest for models this small on a shared CPU).
        seed: seeds data, initialisation and training.
        results: also merge the accuracies into this results JSON (e.g. benchmarks/results/nystrom.json).
        out: run folder (default runs/nystrom-listops-<timestamp>/).
        resume: continue each model from its last checkpoint in ``out``.
    Returns:
        ``{"acc_nystrom": ..., "acc_exact": ..., "majority_class": ...}`` (percent) for the models trained
        (keys with the suffixes above for the variants).
    """
    kinds = ["nystrom", "exact"] if attention == "both" else [attention]
    if any(k not in PUBLISHED for k in kinds):
        raise KexueError(f"attention must be nystrom, exact or both, got {attention!r}")
    config = {k: v for k, v in locals().items() if k not in ("kinds",)}
    out = make_run_dir(out, "nystrom-listops", config)
    if threads > 0:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    train_x, train_y = lo.to_tensors(*lo.generate(train_size, min_len, max_len, max_depth, max_args, seed=seed), max_len)
    test_x, test_y = lo.to_tensors(*lo.generate(test_size, min_len, max_len, max_depth, max_args, seed=seed + 10_007),
                                   max_len)
    print(f"[listops] {train_size} train / {test_size} test expressions of {min_len}-{max_len} tokens "
          f"in {time.perf_counter() - t0:.1f} s; majority class {test_y.bincount().max().item() / test_size:.1%}")
    command = (f"kexue nystrom listops --attention {attention} --steps {steps} --lr {lr} --train_size {train_size} "
               f"--min_len {min_len} --max_len {max_len} --num_landmarks {num_landmarks} --seed {seed}"
               f" --conv_kernel {'null' if conv_kernel is None else conv_kernel}" + (" --exact_conv" if exact_conv else ""))
    accs: dict[str, float] = {"majority_class": 100 * test_y.bincount().max().item() / test_size}
    figures = []
    for kind in kinds:
        torch.manual_seed(seed)
        model = NystromformerClassifier(len(lo.VOCAB), lo.NUM_CLASSES, max_len, dim, depth, heads, kind,
                                        num_landmarks, conv_kernel=conv_kernel, dropout=dropout,
                                        exact_conv=exact_conv)
        cfg = TrainConfig(steps=steps, lr=lr, optimizer="adamw", weight_decay=0.01, schedule="cosine",
                          warmup_steps=max(1, steps // 20), eval_every=max(1, steps // 3),
                          ckpt_every=max(1, steps // 3), log_every=max(1, steps // 30), seed=seed)
        data = TensorBatches(train_x, train_y, batch_size=batch_size, seed=seed)
        result = fit(model, _trimmed_loss, data, cfg, out / kind,
                     eval_fn=lambda mdl: {"test_acc": accuracy(mdl, test_x, test_y)}, resume=resume,
                     desc=f"listops-{kind}")
        variant = {"nystrom": "_no_conv" if conv_kernel is None else "",
                   "exact": "_conv" if exact_conv and conv_kernel is not None else ""}[kind]
        key = f"acc_{kind}{variant}"
        accs[key] = 100 * accuracy(model, test_x, test_y)
        published = (PUBLISHED[kind], PAPER) if not variant else (None, None)
        figures.append(Figure(f"nystrom.listops.{key}", accs[key], *published, command))
        print(f"[listops] {kind}{variant}: test accuracy {accs[key]:.2f}% after {result.step} steps "
              f"({result.seconds:.0f} s); train loss {result.train.get('loss', float('nan')):.3f}")
    write_results(out / "results.json", figures)
    write_json(out / "summary.json", accs)
    if results is not None:
        write_results(results, figures, merge=True)
    print(f"[listops] wrote {out / 'results.json'}" + (f" and merged into {results}" if results else ""))
    return accs


def _trimmed_loss(model, batch, generator):
    """Classification loss on a batch cut to its longest real sequence (padding changes nothing)."""
    tokens, labels = batch
    keep = int((tokens != 0).sum(1).max())
    return classification_loss(model, (tokens[:, :keep], labels), generator)


def errors(run: Path, length: int = 256, num_sequences: int = 8, landmarks: list[int] | None = None,
           results: Path | None = None, figure: Path | None = None) -> dict[int, dict[str, float]]:
    """Error study on a trained model: q, k, v of the first block of the Nyström ListOps model.

    Relative error ‖Ŷ − Y‖/‖Y‖ of ours, nystrom-attention and transformers' Nyströmformer against
    exact attention, on the same q, k, v (unpadded ListOps expressions of exactly ``length`` tokens).

    Args:
        run: folder of a ``kexue nystrom listops`` run (its config.yaml and nystrom/checkpoints).
        length: tokens per expression (a multiple of every m; at most the model's max_len).
        num_sequences: expressions in the batch.
        landmarks: m values (default 16, 32, 64, 128).
        results: also merge the errors into this results JSON.
        figure: also plot them to this PNG.
    Returns:
        ``{m: {method: error}}``.
    """
    import yaml

    from kexue.bench.nystrom import relative_errors
    from kexue.io import save_figure
    from kexue.training.checkpoint import latest_checkpoint, load_weights

    run = Path(run)
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except FileNotFoundError:
        raise KexueError(f"no config.yaml in {run}; pass the folder of a 'kexue nystrom listops' run") from None
    ckpt = latest_checkpoint(run / "nystrom" / "checkpoints")
    if ckpt is None:
        raise KexueError(f"no Nyström checkpoint under {run / 'nystrom' / 'checkpoints'}")
    landmarks = landmarks or [16, 32, 64, 128]
    if length > cfg["max_len"] or any(length % m for m in landmarks):
        raise KexueError(f"length must be <= {cfg['max_len']} and a multiple of every m in {landmarks}")
    model = NystromformerClassifier(len(lo.VOCAB), lo.NUM_CLASSES, cfg["max_len"], cfg["dim"], cfg["depth"],
                                    cfg["heads"], "nystrom", cfg["num_landmarks"], conv_kernel=cfg["conv_kernel"])
    load_weights(model, ckpt / "model.safetensors")
    model.eval()
    tokens, _ = lo.to_tensors(*lo.generate(num_sequences, length, length, cfg["max_depth"], cfg["max_args"],
                                           seed=cfg["seed"] + 20_011), length)
    block = model.blocks[0]
    with torch.no_grad():
        x = model.embed(tokens) + model.pos.weight[:length]          # (B, n, dim)
        q, k, v = block.attn.to_qkv(block.norm1(x)).unflatten(-1, (3, cfg["heads"], -1)).permute(2, 0, 3, 1, 4)
    errs = relative_errors(length, landmarks, q, k, v)
    command = (f"kexue nystrom errors --run {run} --length {length} --num_sequences {num_sequences} "
               f"--landmarks '{landmarks}'")
    print(f"{'m':>5} " + " ".join(f"{name:>11}" for name in errs[landmarks[0]]))
    for m, row in errs.items():
        print(f"{m:>5} " + " ".join(f"{e:11.4g}" for e in row.values()))
    if results is not None:
        write_results(results, [Figure(f"nystrom.trained_listops.n{length}.m{m}.rel_error_{name}", e, command=command)
                                for m, row in errs.items() for name, e in row.items()], merge=True)
    if figure is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for name, style in (("ours", "o-"), ("lucidrains", "s--"), ("hf", "^:")):
            ax.plot(landmarks, [errs[m][name] for m in landmarks], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("landmarks m")
        ax.set_ylabel("‖Ŷ − Y‖ / ‖Y‖ vs exact")
        ax.set_title(f"trained ListOps model, block 1, n = {length}")
        ax.legend()
        save_figure(fig, figure)
    return errs
