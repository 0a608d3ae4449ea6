import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from mdm_prime.data.images import load_images, pad_images, quantize, read_idx
from mdm_prime.data.install import is_installed
from mdm_prime.data.paths import MissingDataError


def _write_idx(path, arr: np.ndarray, compress: bool):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx(tmp_path, compress):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    p = tmp_path / ("x.idx.gz" if compress else "x.idx")
    _write_idx(p, arr, compress)
    assert np.array_equal(read_idx(p), arr)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04" + bytes(10))
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(p)
    q = tmp_path / "short"
    q.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + bytes(3))
    with pytest.raises(ValueError, match="holds 3"):
        read_idx(q)


def test_quantize_and_pad():
    x = torch.tensor([0, 15, 16, 255])
    assert quantize(x, 256, 16).tolist() == [0, 0, 1, 15]
    with pytest.raises(ValueError, match="levels"):
        quantize(x, 256, 300)
    y = pad_images(torch.ones(2, 1, 28, 28, dtype=torch.long), 32)
    assert y.shape == (2, 1, 32, 32) and int(y.sum()) == 2 * 28 * 28 and int(y[0, 0, 2, 2]) == 1


def _fake_cifar(folder, n_per_batch=4):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n_per_batch)),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar10_fake_folder(tmp_path):
    folder = _fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_images("cifar10", str(folder), n_valid=2, levels=32)
    assert data.shape == (3, 32, 32) and data.num_levels == 32
    assert len(data["train"]) == 18 and len(data["valid"]) == 2 and len(data["test"]) == 4
    x = data["test"].images
    assert x.dtype == torch.long and 0 <= int(x.min()) and int(x.max()) < 32
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"].reshape(-1, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(raw.astype(np.int64)) * 32 // 256)  # channel-first layout kept


def test_cifar10_missing_folder(tmp_path):
    with pytest.raises(MissingDataError, match="data_batch_1"):
        load_images("cifar10", str(tmp_path))


def test_digits():
    data = load_images("digits")
    assert data.num_levels == 17 and data.shape == (1, 8, 8)
    assert sum(len(s) for s in data.splits.values()) == 1797
    assert int(data["train"].images.max()) == 16
    again = load_images("digits")
    assert torch.equal(again["valid"].labels, data["valid"].labels)


def test_unknown_set():
    with pytest.raises(ValueError, match="mnist"):
        load_images("svhn")


def test_mnist_missing_message(data_home):
    with pytest.raises(MissingDataError, match="mdm-prime data install fashion-mnist"):
        load_images("fashion-mnist")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_installed_idx_sets(name):
    if not is_installed(name):
        pytest.skip(f"{name} not installed (mdm-prime data install {name})")
    data = load_images(name, pad_to=32, levels=16)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [55000, 5000, 10000]
    assert data.shape == (1, 32, 32) and int(data["train"].images.max()) == 15
    assert set(data["test"].labels.unique().tolist()) == set(range(10))
