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
    with pytest.raises(KexueError, match="IDX file .*nope not found"):
        read_idx(tmp_path / "nope")
    # a forged header claiming 2^32-1 images of 2^32-1 × 2^32-1 pixels is truncated, not an overflow
    (tmp_path / "huge").write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + b"\0" * 10)
    with pytest.raises(KexueError, match="huge is truncated"):
        read_idx(tmp_path / "huge")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-20] + b"\xff" * 20)
    with pytest.raises(KexueError, match=r"bad.gz (is a corrupt compressed file|ends too early)"):
        read_idx(tmp_path / "bad.gz")


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
    with pytest.raises(KexueError, match="lacks arrays y_train, x_test, y_test"):
        load_images(str(tmp_path / "bad.npz"))
    assert t.source == str((tmp_path / "d.npz").resolve()) and s.source == str(tmp_path.resolve())


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"y_train": np.full(6, -1)}, "labels must be class indices >= 0"),
        ({"x_train": np.zeros((0, 28, 28)), "y_train": np.zeros(0)}, "holds no images"),
        ({"y_train": np.arange(5)}, "6 images but 5 labels"),
        ({"x_test": np.zeros((6, 27, 27))}, "train images are 28×28 but test images are 27×27"),
        ({"x_train": np.full((6, 28, 28), np.inf)}, "NaN or infinite"),
        ({"y_train": np.full(6, 1.5)}, "whole numbers"),
    ],
)
def test_npz_contents_are_checked_before_training(tmp_path, arrays, message):
    x, y = np.random.default_rng(0).integers(0, 256, (6, 28, 28)), np.arange(6) % 3
    np.savez(tmp_path / "d.npz", **{"x_train": x, "y_train": y, "x_test": x, "y_test": y, **arrays})
    with pytest.raises(KexueError, match=message) as e:
        load_images(str(tmp_path / "d.npz"))
    assert "d.npz" in str(e.value) and "\n" not in str(e.value)


def test_npz_of_0_255_floats_is_scaled(tmp_path):
    x = np.full((4, 8, 8), 255.0)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.arange(4), x_test=x, y_test=np.arange(4))
    assert float(load_images(str(tmp_path / "f.npz")).train_x.max()) == 1.0


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
