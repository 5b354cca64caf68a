"""``kexue nystrom listops``: train a Nyströmformer and an exact-attention Transformer of the same
size on generated ListOps and compare their test accuracies (paper, LRA: 37.15 vs 37.10)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch

from kexue.bench.common import check_new_run_dir, check_results_file, require_modules
from kexue.data import listops as lo
from kexue.errors import KexueError
from kexue.io import check_output_file, make_run_dir, run_config, write_json
from kexue.models.nystromformer import NystromformerClassifier, accuracy, classification_loss
from kexue.params import AtLeastTwo, Dropout, NonNegativeInt, PositiveFloat, PositiveInt, check, set_threads
from kexue.provenance import command_line
from kexue.results import Figure, write_results
from kexue.training import TensorBatches, TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint

PAPER = "Xiong et al. 2021, Table 3 (LRA ListOps, 64 landmarks, lengths 500-2000)"
PUBLISHED = {"nystrom": 37.15, "exact": 37.10}


def listops(attention: Literal["nystrom", "exact", "both"] = "both", steps: PositiveInt = 2000,
            batch_size: PositiveInt = 32, lr: PositiveFloat = 2e-3, train_size: PositiveInt = 10000,
            test_size: PositiveInt = 1000, min_len: PositiveInt = 60, max_len: PositiveInt = 160,
            max_depth: PositiveInt = 10, max_args: AtLeastTwo = 10, dim: PositiveInt = 64, depth: PositiveInt = 2,
            heads: PositiveInt = 2, num_landmarks: PositiveInt = 16, conv_kernel: PositiveInt | None = 35,
            exact_conv: bool = False, dropout: Dropout = 0.0, threads: PositiveInt | None = 1,
            seed: NonNegativeInt = 0, results: Path | None = None, out: Path | None = None, resume: bool = False,
            overwrite: bool = False) -> dict[str, float]:
    """Train on generated ListOps with Nyström and/or exact attention; report test accuracy (%).

    Args:
        attention: ``nystrom``, ``exact`` or ``both``.
        steps: optimizer steps per model.
        batch_size: sequences per step.
        lr: peak learning rate (AdamW, 5% warm-up, cosine decay).
        train_size: training expressions.
        test_size: test expressions (drawn with another seed).
        min_len: shortest expression in tokens (at most ``max_len``).
        max_len: longest expression in tokens (LRA: 2000; at least 4, the shortest expression).
        max_depth: deepest nesting (LRA: 10).
        max_args: most arguments per operator (LRA: 10).
        dim: model width (a multiple of ``heads``).
        depth: encoder blocks.
        heads: attention heads.
        num_landmarks: Nyström landmarks m.
        conv_kernel: depthwise-conv skip kernel of the Nyström blocks (odd; LRA: 35), or None (results key
            ``acc_nystrom_no_conv``).
        exact_conv: give the exact blocks the same conv skip, so that the models differ only in the
            attention core (results key ``acc_exact_conv``; the paper's baseline has none).
        dropout: dropout rate in the blocks.
        threads: CPU threads for torch (1 is fastest for models this small on a shared CPU; None: torch's default).
        seed: seeds data, initialisation and training.
        results: also merge the accuracies into this results JSON (e.g. benchmarks/results/nystrom.json).
        out: run folder (default runs/nystrom-listops-<timestamp>/).
        resume: continue each model from its last checkpoint in ``out``.
        overwrite: replace an existing run folder ``out``.
    Returns:
        ``{"acc_nystrom": ..., "acc_exact": ..., "majority_class": ...}`` (percent) for the models trained
        (keys with the suffixes above for the variants).
    """
    config = dict(locals())
    check(min_len <= max_len, f"--min_len {min_len} must not exceed --max_len {max_len}")
    check(max_len >= 4, f"--max_len {max_len}: the shortest ListOps expression ([MAX 1 2 ]) has 4 tokens")
    longest = lo.longest_expression(max_depth, max_args)
    check(min_len <= longest, f"--min_len {min_len}: the longest expression with --max_depth {max_depth} and "
                              f"--max_args {max_args} has {longest} tokens")
    check(dim % heads == 0, f"--dim {dim} must be a multiple of --heads {heads}")
    check(conv_kernel is None or conv_kernel % 2 == 1, f"--conv_kernel {conv_kernel} must be odd (or null)")
    check(not (exact_conv and conv_kernel is None), "--exact_conv needs a --conv_kernel")
    check_new_run_dir(out, overwrite, resume)
    check_results_file(results)
    kinds = ["nystrom", "exact"] if attention == "both" else [attention]
    set_threads(threads)
    t0 = time.perf_counter()
    train_x, train_y = lo.to_tensors(*lo.generate(train_size, min_len, max_len, max_depth, max_args, seed=seed), max_len)
    test_x, test_y = lo.to_tensors(*lo.generate(test_size, min_len, max_len, max_depth, max_args, seed=seed + 10_007),
                                   max_len)
    print(f"[listops] {train_size} train / {test_size} test expressions of {min_len}-{max_len} tokens "
          f"in {time.perf_counter() - t0:.1f} s; majority class {test_y.bincount().max().item() / test_size:.1%}")
    out = make_run_dir(out, "nystrom-listops", config, resume=resume, overwrite=overwrite)
    command = command_line("nystrom listops", listops, config)
    accs: dict[str, float] = {"majority_class": 100 * test_y.bincount().max().item() / test_size}
    figures = []
    for i, kind in enumerate(kinds):
        torch.manual_seed(seed)
        model = NystromformerClassifier(len(lo.VOCAB), lo.NUM_CLASSES, max_len, dim, depth, heads, kind,
                                        num_landmarks, conv_kernel=conv_kernel, dropout=dropout,
                                        exact_conv=exact_conv)
        cfg = TrainConfig(steps=steps, lr=lr, optimizer="adamw", weight_decay=0.01, schedule="cosine",
                          warmup_steps=max(1, steps // 20), eval_every=max(1, steps // 3),
                          ckpt_every=max(1, steps // 3), log_every=max(1, steps // 30), seed=seed)
        data = TensorBatches(train_x, train_y, batch_size=batch_size, seed=seed)
        # a resumed run may have stopped before a later model started: that one starts afresh
        resume_kind = resume and (i == 0 or latest_checkpoint(out / kind / "checkpoints") is not None)
        result = fit(model, _trimmed_loss, data, cfg, out / kind,
                     eval_fn=lambda mdl: {"test_acc": accuracy(mdl, test_x, test_y)}, resume=resume_kind,
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


# keys of a listops run's config.yaml that shape the model and its data -> their least value
_MODEL_KEYS = {"max_len": 4, "dim": 1, "depth": 1, "heads": 1, "num_landmarks": 1, "max_depth": 1, "max_args": 2,
               "seed": 0}


def _listops_config(run: Path) -> dict:
    """The saved config of a ``kexue nystrom listops`` run, checked; anything else is a KexueError."""
    if not run.is_dir():
        raise KexueError(f"--run {run} is not a folder; pass the folder of a `kexue nystrom listops` run")
    if not (run / "config.yaml").is_file():
        raise KexueError(f"--run {run} holds no config.yaml; pass the folder of a `kexue nystrom listops` run")
    command, cfg = run_config(run)
    if command != "nystrom-listops":
        raise KexueError(f"--run {run} is a `{command or 'unknown'}` run, not a `kexue nystrom listops` run")
    where = run / "config.yaml"

    def integer(value, least: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    for key, least in _MODEL_KEYS.items():
        if key not in cfg:
            raise KexueError(f"{where} has no {key!r}; is it the config of a `kexue nystrom listops` run?")
        if not integer(cfg[key], least):
            raise KexueError(f"{where}: {key} must be an integer >= {least}, got {cfg[key]!r}")
    kernel = cfg.get("conv_kernel")
    if kernel is not None and not (integer(kernel, 1) and kernel % 2 == 1):
        raise KexueError(f"{where}: conv_kernel must be a positive odd integer or null, got {kernel!r}")
    if cfg["dim"] % cfg["heads"]:
        raise KexueError(f"{where}: dim {cfg['dim']} is not a multiple of heads {cfg['heads']}")
    if cfg.get("attention", "both") not in ("nystrom", "both"):
        raise KexueError(f"--run {run} trained only exact attention (attention: {cfg.get('attention')!r}); "
                         "the error study needs its Nyström model")
    return cfg


def errors(run: Path, length: PositiveInt = 256, num_sequences: PositiveInt = 8,
           landmarks: list[PositiveInt] | None = None, results: Path | None = None,
           figure: Path | None = None) -> dict[int, dict[str, float]]:
    """Error study on a trained model: q, k, v of the first block of the Nyström ListOps model.

    Relative error ‖Ŷ − Y‖/‖Y‖ of ours, nystrom-attention and transformers' Nyströmformer against
    exact attention, on the same q, k, v (unpadded ListOps expressions of exactly ``length`` tokens).
    Writes nothing unless asked: ``results`` and ``figure`` name the files.

    Args:
        run: folder of a ``kexue nystrom listops`` run (its config.yaml and nystrom/checkpoints).
        length: tokens per expression (at least 4, a multiple of every m, at most the model's max_len).
        num_sequences: expressions in the batch.
        landmarks: m values (default 16, 32, 64, 128).
        results: also merge the errors into this results JSON.
        figure: also plot them to this PNG.
    Returns:
        ``{m: {method: error}}``.
    """
    arguments = dict(locals())
    from kexue.bench.nystrom import relative_errors
    from kexue.io import save_figure
    from kexue.training.checkpoint import load_weights

    check(landmarks is None or len(landmarks) > 0, "--landmarks names no landmark count")
    landmarks = landmarks or [16, 32, 64, 128]
    check(length >= 4, f"--length {length}: the shortest ListOps expression ([MAX 1 2 ]) has 4 tokens")
    bad = [m for m in landmarks if length % m]
    check(not bad, f"--length {length} must be a multiple of every --landmarks value; not of {bad}")
    check_results_file(results)
    check_output_file(figure, "--figure")
    require_modules(("nystrom_attention", "pip install 'kexue[peers]'"), ("transformers", "pip install 'kexue[hf]'"))
    run = Path(run)
    cfg = _listops_config(run)
    check(length <= cfg["max_len"], f"--length {length} exceeds the model's max_len {cfg['max_len']}")
    check(length <= lo.longest_expression(cfg["max_depth"], cfg["max_args"]),
          f"--length {length}: no expression that long with the run's max_depth {cfg['max_depth']} "
          f"and max_args {cfg['max_args']}")
    ckpt = latest_checkpoint(run / "nystrom" / "checkpoints")
    if ckpt is None:
        raise KexueError(f"--run {run}: no Nyström checkpoint under {run / 'nystrom' / 'checkpoints'}")
    model = NystromformerClassifier(len(lo.VOCAB), lo.NUM_CLASSES, cfg["max_len"], cfg["dim"], cfg["depth"],
                                    cfg["heads"], "nystrom", cfg["num_landmarks"], conv_kernel=cfg.get("conv_kernel"))
    load_weights(model, ckpt / "model.safetensors")
    model.eval()
    tokens, _ = lo.to_tensors(*lo.generate(num_sequences, length, length, cfg["max_depth"], cfg["max_args"],
                                           seed=cfg["seed"] + 20_011), length)
    block = model.blocks[0]
    with torch.no_grad():
        x = model.embed(tokens) + model.pos.weight[:length]          # (B, n, dim)
        q, k, v = block.attn.to_qkv(block.norm1(x)).unflatten(-1, (3, cfg["heads"], -1)).permute(2, 0, 3, 1, 4)
    errs = relative_errors(length, landmarks, q, k, v)
    command = command_line("nystrom errors", errors, arguments)
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
