"""Article 8, Nyström attention (kexue.fm/archives/8180) on ListOps: train, compare, measure the error.

Two procedures:

1. the ListOps study (:func:`listops_study`, ``kexue nystrom listops``): generate ListOps
   (:mod:`kexue.data.listops`), train a Nyströmformer and an exact-attention Transformer of the same
   size (:class:`~kexue.models.nystromformer.NystromformerClassifier`) through :func:`kexue.training.fit`,
   and compare their test accuracies with the paper's (LRA ListOps: 37.15 vs 37.10);
2. the approximation error on a trained model (:func:`trained_model_errors`, ``kexue nystrom
   errors``): the q, k, v of the first block of a trained Nyström model, and how far ours and the
   public implementations land from exact attention on them (:mod:`kexue.analysis.attention`).

Example::

    from kexue.recipes.listops import listops_study, trained_model_errors

    folder, accs = listops_study(steps=300, train_size=2000, out="runs/listops")   # {'acc_nystrom': ..., ...}
    trained_model_errors("runs/listops", length=64, landmarks=[8, 16])             # {8: {'ours': ...}, 16: ...}

Both write a ``results.json`` whose rows carry the ``kexue nystrom ...`` command that reruns them.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kexue.analysis.attention import relative_errors, require_peers
from kexue.checks import check_new_run_dir, check_results_file
from kexue.data import listops as lo
from kexue.errors import KexueError
from kexue.io import (
    check_output_file,
    make_run_dir,
    run_config,
    save_figure,
    write_json,
)
from kexue.models.nystromformer import (
    NystromformerClassifier,
    accuracy,
    classification_loss,
)
from kexue.params import check, set_threads
from kexue.provenance import command_line
from kexue.results import Figure, write_results
from kexue.training import FitResult, TensorBatches, TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint, load_weights

PAPER = "Xiong et al. 2021, Table 3 (LRA ListOps, 64 landmarks, lengths 500-2000)"
PUBLISHED = {"nystrom": 37.15, "exact": 37.10}
LISTOPS_COMMAND = "nystrom-listops"  # the command named in a run folder's config.yaml
TEST_SEED_OFFSET = 10_007  # the test set is drawn with seed + this
ERROR_SEED_OFFSET = 20_011  # the error study's expressions are drawn with seed + this


# ---- the study: data -> one model per attention kind -> accuracies ------------------------------


def check_listops_settings(
    min_len: int,
    max_len: int,
    max_depth: int,
    max_args: int,
    dim: int,
    heads: int,
    conv_kernel: int | None,
    exact_conv: bool,
) -> None:
    """The rules across settings of a ListOps run, checked before any data is generated."""
    check(min_len <= max_len, f"--min_len {min_len} must not exceed --max_len {max_len}")
    check(max_len >= 4, f"--max_len {max_len}: the shortest ListOps expression ([MAX 1 2 ]) has 4 tokens")
    longest = lo.longest_expression(max_depth, max_args)
    check(
        min_len <= longest,
        f"--min_len {min_len}: the longest expression with --max_depth {max_depth} and "
        f"--max_args {max_args} has {longest} tokens",
    )
    check(dim % heads == 0, f"--dim {dim} must be a multiple of --heads {heads}")
    check(conv_kernel is None or conv_kernel % 2 == 1, f"--conv_kernel {conv_kernel} must be odd (or null)")
    check(not (exact_conv and conv_kernel is None), "--exact_conv needs a --conv_kernel")


def listops_data(
    train_size: int, test_size: int, min_len: int, max_len: int, max_depth: int, max_args: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and test ListOps as (train_x (N, max_len), train_y (N,), test_x, test_y); 0 pads."""
    train = lo.generate(train_size, min_len, max_len, max_depth, max_args, seed=seed)
    test = lo.generate(test_size, min_len, max_len, max_depth, max_args, seed=seed + TEST_SEED_OFFSET)
    return (*lo.to_tensors(*train, max_len), *lo.to_tensors(*test, max_len))


def trimmed_loss(model, batch, generator=None):
    """Classification loss on a batch cut to its longest real sequence (padding changes nothing)."""
    tokens, labels = batch
    keep = int((tokens != 0).sum(1).max())
    return classification_loss(model, (tokens[:, :keep], labels), generator)


def train_classifier(
    model: NystromformerClassifier,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    folder: Path | None = None,
    resume: bool = False,
    desc: str = "listops",
) -> FitResult:
    """AdamW (weight decay 0.01), 5% warm-up then cosine decay; test accuracy logged three times."""
    cfg = TrainConfig(
        steps=steps,
        lr=lr,
        optimizer="adamw",
        weight_decay=0.01,
        schedule="cosine",
        warmup_steps=max(1, steps // 20),
        eval_every=max(1, steps // 3),
        ckpt_every=max(1, steps // 3),
        log_every=max(1, steps // 30),
        seed=seed,
    )
    test_x, test_y = test
    return fit(
        model,
        trimmed_loss,
        TensorBatches(*train, batch_size=batch_size, seed=seed),
        cfg,
        folder,
        eval_fn=lambda m: {"test_acc": accuracy(m, test_x, test_y)},
        resume=resume,
        desc=desc,
    )


def listops_study(
    attention: str = "both",
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 2e-3,
    train_size: int = 10000,
    test_size: int = 1000,
    min_len: int = 60,
    max_len: int = 160,
    max_depth: int = 10,
    max_args: int = 10,
    dim: int = 64,
    depth: int = 2,
    heads: int = 2,
    num_landmarks: int = 16,
    conv_kernel: int | None = 35,
    exact_conv: bool = False,
    dropout: float = 0.0,
    threads: int | None = 1,
    seed: int = 0,
    results: Path | None = None,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> tuple[Path, dict[str, float]]:
    """Train on generated ListOps with Nyström and/or exact attention: ``kexue nystrom listops`` from Python.

    The parameters are those of the command (``kexue nystrom listops --help`` explains each). Writes
    into the run folder ``out``: ``config.yaml``, one sub-folder per model (metrics, checkpoints),
    ``results.json`` and ``summary.json``; with ``results``, also merges the rows into that file.
    Returns (run folder, ``{"acc_nystrom": ..., "acc_exact": ..., "majority_class": ...}`` in percent;
    ``acc_nystrom_no_conv`` without a conv skip, ``acc_exact_conv`` with ``exact_conv``).
    """
    arguments = dict(locals())
    check(attention in ("nystrom", "exact", "both"), f"--attention {attention!r}: choose nystrom, exact or both")
    check_listops_settings(min_len, max_len, max_depth, max_args, dim, heads, conv_kernel, exact_conv)
    check_new_run_dir(out, overwrite, resume)
    check_results_file(results)
    kinds = ["nystrom", "exact"] if attention == "both" else [attention]
    set_threads(threads)
    t0 = time.perf_counter()
    train_x, train_y, test_x, test_y = listops_data(train_size, test_size, min_len, max_len, max_depth, max_args, seed)
    majority = 100 * test_y.bincount().max().item() / test_size
    print(
        f"[listops] {train_size} train / {test_size} test expressions of {min_len}-{max_len} tokens "
        f"in {time.perf_counter() - t0:.1f} s; majority class {majority:.1f}%"
    )
    out = make_run_dir(out, LISTOPS_COMMAND, arguments, resume=resume, overwrite=overwrite)
    command = command_line("nystrom listops", listops_study, arguments)
    accs: dict[str, float] = {"majority_class": majority}
    figures = []
    for i, kind in enumerate(kinds):
        torch.manual_seed(seed)
        model = NystromformerClassifier(
            len(lo.VOCAB),
            lo.NUM_CLASSES,
            max_len,
            dim,
            depth,
            heads,
            kind,
            num_landmarks,
            conv_kernel=conv_kernel,
            dropout=dropout,
            exact_conv=exact_conv,
        )
        # a resumed run may have stopped before a later model started: that one starts afresh
        resume_kind = resume and (i == 0 or latest_checkpoint(out / kind / "checkpoints") is not None)
        result = train_classifier(
            model,
            (train_x, train_y),
            (test_x, test_y),
            steps,
            batch_size,
            lr,
            seed,
            out / kind,
            resume_kind,
            desc=f"listops-{kind}",
        )
        variant = {
            "nystrom": "_no_conv" if conv_kernel is None else "",
            "exact": "_conv" if exact_conv and conv_kernel is not None else "",
        }[kind]
        key = f"acc_{kind}{variant}"
        accs[key] = 100 * accuracy(model, test_x, test_y)
        published = (PUBLISHED[kind], PAPER) if not variant else (None, None)
        figures.append(Figure(f"nystrom.listops.{key}", accs[key], *published, command))
        print(
            f"[listops] {kind}{variant}: test accuracy {accs[key]:.2f}% after {result.step} steps "
            f"({result.seconds:.0f} s); train loss {result.train.get('loss', float('nan')):.3f}"
        )
    write_results(out / "results.json", figures)
    write_json(out / "summary.json", accs)
    if results is not None:
        write_results(results, figures, merge=True)
    return out, accs


# ---- the approximation error on a trained model ------------------------------------------------

# keys of a listops run's config.yaml that shape the model and its data -> their least value
_MODEL_KEYS = {
    "max_len": 4,
    "dim": 1,
    "depth": 1,
    "heads": 1,
    "num_landmarks": 1,
    "max_depth": 1,
    "max_args": 2,
    "seed": 0,
}


def check_listops_run(run: Path) -> dict:
    """The saved config of a ``kexue nystrom listops`` run with a Nyström model, checked.

    Anything else (not a folder, another command's run, a malformed config, only exact attention)
    is one KexueError naming ``--run`` or the config file.
    """
    run = Path(run)
    if not run.is_dir():
        raise KexueError(f"--run {run} is not a folder; pass the folder of a `kexue nystrom listops` run")
    if not (run / "config.yaml").is_file():
        raise KexueError(f"--run {run} holds no config.yaml; pass the folder of a `kexue nystrom listops` run")
    command, cfg = run_config(run)
    if command != LISTOPS_COMMAND:
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
        raise KexueError(
            f"--run {run} trained only exact attention (attention: {cfg.get('attention')!r}); "
            "the error study needs its Nyström model"
        )
    return cfg


def load_listops_model(run: Path, cfg: dict | None = None) -> NystromformerClassifier:
    """The Nyström model of a ``kexue nystrom listops`` run, from its last checkpoint, in eval mode."""
    run = Path(run)
    cfg = cfg if cfg is not None else check_listops_run(run)
    ckpt = latest_checkpoint(run / "nystrom" / "checkpoints")
    if ckpt is None:
        raise KexueError(f"--run {run}: no Nyström checkpoint under {run / 'nystrom' / 'checkpoints'}")
    model = NystromformerClassifier(
        len(lo.VOCAB),
        lo.NUM_CLASSES,
        cfg["max_len"],
        cfg["dim"],
        cfg["depth"],
        cfg["heads"],
        "nystrom",
        cfg["num_landmarks"],
        conv_kernel=cfg.get("conv_kernel"),
    )
    load_weights(model, ckpt / "model.safetensors")
    return model.eval()


def trained_model_errors(
    run: Path,
    length: int = 256,
    num_sequences: int = 8,
    landmarks: list[int] | None = None,
    results: Path | None = None,
    figure: Path | None = None,
) -> dict[int, dict[str, float]]:
    """Relative error against exact attention on a trained model's q, k, v: ``kexue nystrom errors`` from Python.

    The q, k, v are those of the first block of the run's Nyström model on ``num_sequences``
    unpadded ListOps expressions of exactly ``length`` tokens; ours, lucidrains' and hf's Nyström
    attention at each m of ``landmarks`` (default 16, 32, 64, 128) are compared with exact attention
    on them. Writes nothing unless asked: ``results`` (merged) and ``figure`` (a PNG).
    Returns ``{m: {"lucidrains": e, "hf": e, "ours": e}}``.
    """
    arguments = dict(locals())
    check(landmarks is None or len(landmarks) > 0, "--landmarks names no landmark count")
    landmarks = list(landmarks or [16, 32, 64, 128])
    check(length >= 4, f"--length {length}: the shortest ListOps expression ([MAX 1 2 ]) has 4 tokens")
    bad = [m for m in landmarks if length % m]
    check(not bad, f"--length {length} must be a multiple of every --landmarks value; not of {bad}")
    check_results_file(results)
    check_output_file(figure, "--figure")
    require_peers("the error study")
    cfg = check_listops_run(run)
    check(length <= cfg["max_len"], f"--length {length} exceeds the model's max_len {cfg['max_len']}")
    check(
        length <= lo.longest_expression(cfg["max_depth"], cfg["max_args"]),
        f"--length {length}: no expression that long with the run's max_depth {cfg['max_depth']} "
        f"and max_args {cfg['max_args']}",
    )
    model = load_listops_model(run, cfg)
    tokens, _ = lo.to_tensors(
        *lo.generate(
            num_sequences, length, length, cfg["max_depth"], cfg["max_args"], seed=cfg["seed"] + ERROR_SEED_OFFSET
        ),
        length,
    )
    errs = relative_errors(length, landmarks, *model.attention_inputs(tokens))
    command = command_line("nystrom errors", trained_model_errors, arguments)
    if results is not None:
        write_results(
            results,
            [
                Figure(f"nystrom.trained_listops.n{length}.m{m}.rel_error_{name}", e, command=command)
                for m, row in errs.items()
                for name, e in row.items()
            ],
            merge=True,
        )
    if figure is not None:
        plot_errors(errs, f"trained ListOps model, block 1, n = {length}", figure)
    return errs


def plot_errors(errs: dict[int, dict[str, float]], title: str, path: Path) -> Path:
    """Relative error of each method against m (log scale), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    landmarks = sorted(errs)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, style in (("ours", "o-"), ("lucidrains", "s--"), ("hf", "^:")):
        ax.plot(landmarks, [errs[m][name] for m in landmarks], style, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("landmarks m")
    ax.set_ylabel("‖Ŷ − Y‖ / ‖Y‖ vs exact")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)
