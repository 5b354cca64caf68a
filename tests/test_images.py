import gzip
import struct

import numpy as np
import pytest

from kexue.data.images import FASHION_MNIST_DIR, load_images, read_idx
from kexue.errors import KexueError


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_idx_reader_good_gzipped_and_plain(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(arr))
    with gzip.open(tmp_path / "b-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), arr)
    assert np.array_equal(read_idx(tmp_path / "b-idx3-ubyte.gz"), arr)


def test_idx_reader_truncated_and_wrong_magic(tmp_path):
    data = _idx_bytes(np.zeros((5, 2, 2)))
    (tmp_path / "short").write_bytes(data[:-3])
    with pytest.raises(KexueError, match=r"short is truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(KexueError, match=r"magic is not an IDX file"):
        read_idx(tmp_path / "magic")
    with pytest.raises(KexueError, match="IDX file not found"):
        read_idx(tmp_path / "nope")


def test_idx_folder_and_npz(tmp_path):
    x, y = np.random.default_rng(0).integers(0, 256, (6, 28, 28)), np.arange(6) % 3
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(_idx_bytes(x))
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(_idx_bytes(y))
    s = load_images(str(tmp_path))
    assert s.train_x.shape == (6, 1, 28, 28) and s.train_x.max() <= 1 and s.test_y.tolist() == y.tolist()
    assert s.train_x[0, 0].mul(255).round().int().tolist() == x[0].tolist()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    t = load_images(str(tmp_path / "d.npz"))
    assert t.test_x.shape == (2, 1, 28, 28) and t.num_classes == 3
    np.savez(tmp_path / "bad.npz", x_train=x)
    with pytest.raises(KexueError, match="lacks array"):
        load_images(str(tmp_path / "bad.npz"))


def test_missing_directory_and_unknown_name(tmp_path):
    with pytest.raises(KexueError, match="unknown data set"):
        load_images(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KexueError, match="missing train-images-idx3-ubyte"):
        load_images(str(tmp_path / "empty"))


def test_builtin_sets():
    digits = load_images("digits")
    assert digits.image_size == (8, 8) and len(digits.train_x) + len(digits.test_x) == 1797
    m = load_images("mnist5k")
    assert m.train_x.shape == (4000, 1, 28, 28) and m.test_x.shape == (1000, 1, 28, 28)
    assert m.test_y.bincount().tolist() == [100] * 10  # stratified
    assert float(m.train_x.max()) == 1.0 and float(m.train_x.min()) == 0.0


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    f = load_images("fashion_mnist")
    assert f.train_x.shape == (60000, 1, 28, 28) and f.test_x.shape == (10000, 1, 28, 28)
    assert f.train_y.bincount().tolist() == [6000] * 10


def test_random_affine_identity_and_seeded():
    import torch

    from kexue.data.images import random_affine

    x = load_images("digits").train_x[:16]
    assert torch.equal(random_affine(x, torch.Generator().manual_seed(0), 0.0, 0.0, 0.0), x)
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert a.min() >= 0 and a.max() <= 1
    # Mass is roughly kept by a small shift/rotation/zoom (nothing is cropped from an 8×8 digit's centre).
    assert (a.sum((1, 2, 3)) / x.sum((1, 2, 3))).mean().item() == pytest.approx(1.0, abs=0.2)
