"""``kexue nystrom listops / errors``: Nyström attention on ListOps (article 8, archives/8180).

Thin entry points: the parser enforces the types below, :mod:`kexue.recipes.listops` checks the
rest and does the work, these functions print the outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kexue.params import AtLeastTwo, Dropout, NonNegativeInt, PositiveFloat, PositiveInt
from kexue.recipes.listops import listops_study, trained_model_errors


def listops(
    attention: Literal["nystrom", "exact", "both"] = "both",
    steps: PositiveInt = 2000,
    batch_size: PositiveInt = 32,
    lr: PositiveFloat = 2e-3,
    train_size: PositiveInt = 10000,
    test_size: PositiveInt = 1000,
    min_len: PositiveInt = 60,
    max_len: PositiveInt = 160,
    max_depth: PositiveInt = 10,
    max_args: AtLeastTwo = 10,
    dim: PositiveInt = 64,
    depth: PositiveInt = 2,
    heads: PositiveInt = 2,
    num_landmarks: PositiveInt = 16,
    conv_kernel: PositiveInt | None = 35,
    exact_conv: bool = False,
    dropout: Dropout = 0.0,
    threads: PositiveInt | None = 1,
    seed: NonNegativeInt = 0,
    results: Path | None = None,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, float]:
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
    folder, accs = listops_study(**dict(locals()))  # the recipe takes the same parameters
    print(f"[listops] wrote {folder / 'results.json'}" + (f" and merged into {results}" if results else ""))
    return accs


def errors(
    run: Path,
    length: PositiveInt = 256,
    num_sequences: PositiveInt = 8,
    landmarks: list[PositiveInt] | None = None,
    results: Path | None = None,
    figure: Path | None = None,
) -> dict[int, dict[str, float]]:
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
    errs = trained_model_errors(**dict(locals()))  # the recipe takes the same parameters
    names = next(iter(errs.values()))
    print(f"{'m':>5} " + " ".join(f"{name:>11}" for name in names))
    for m, row in errs.items():
        print(f"{m:>5} " + " ".join(f"{e:11.4g}" for e in row.values()))
    return errs
