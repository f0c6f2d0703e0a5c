import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from hwnet.datatypes import parse_type
from hwnet.errors import HwnetError
from hwnet.train.data import default_mnist_dir, load_dataset, mnist_available, read_idx

requires_mnist = pytest.mark.skipif(not mnist_available(), reason="MNIST IDX files not present "
                                    "(../shared/data/mnist or $HWNET_MNIST_DIR)")


def _idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_idx(path, array, compress=True):
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_mnist(folder, n=10000, compress=True, side=2):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


# --- digits ----------------------------------------------------------------------------------------------------

def test_digits_split():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.train_x.shape == (1437, 64) and ds.test_x.shape == (360, 64)
    assert ds.train_y.shape == (1437,) and ds.test_y.shape == (360,)
    for a in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        assert a.dtype == np.int64
    assert ds.input_type == "uint5" and ds.input_max == 16
    assert ds.input_size == 64 and ds.classes == 10
    assert parse_type(ds.input_type).is_legal(ds.train_x) and parse_type(ds.input_type).is_legal(ds.test_x)
    assert ds.train_x.min() == 0 and max(ds.train_x.max(), ds.test_x.max()) == 16
    assert set(np.unique(ds.test_y)) == set(range(10))
    # the documented split: permutation from default_rng(0), first 80% train, last 20% test
    ref = load_digits()
    order = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(ds.train_x, ref.data[order[:1437]])
    np.testing.assert_array_equal(ds.test_y, ref.target[order[1437:]])
    # every sample once
    both = np.concatenate([ds.train_x, ds.test_x])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, ref.data.astype(int).tolist()))


def test_digits_deterministic():
    a, b = load_dataset("digits"), load_dataset("digits")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_unknown_dataset():
    with pytest.raises(HwnetError, match="unknown data set 'cifar': choose one of digits, mnist, mnist-full"):
        load_dataset("cifar")


def test_data_module_imports_neither_torch_nor_amaranth():
    code = ("import sys, hwnet.train.data, hwnet.train; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "import hwnet.train.binarynet, hwnet.train.trainer, hwnet.train.lower; "
            "assert not any(m == 'amaranth' or m.startswith('amaranth.') for m in sys.modules), 'amaranth'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_exports():
    import hwnet.train as train

    assert train.load_dataset is load_dataset
    from hwnet.train.trainer import train_binarynet
    assert train.train_binarynet is train_binarynet
    with pytest.raises(AttributeError):
        train.no_such_thing


# --- MNIST (synthetic files: always run) ---------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_mnist_loader_on_synthetic_files(tmp_path, compress):
    images, labels = _fake_mnist(tmp_path, compress=compress)
    assert mnist_available(tmp_path)
    ds = load_dataset("mnist", mnist_dir=tmp_path)
    assert ds.train_x.shape == (8000, 4) and ds.test_x.shape == (2000, 4)
    assert ds.input_type == "uint8" and ds.input_max == 255
    np.testing.assert_array_equal(ds.train_x, images[:8000].reshape(8000, 4))
    np.testing.assert_array_equal(ds.test_x, images[8000:].reshape(2000, 4))
    np.testing.assert_array_equal(ds.train_y, labels[:8000])
    np.testing.assert_array_equal(ds.test_y, labels[8000:])
    assert ds.train_x.dtype == np.int64 and ds.test_y.dtype == np.int64


def test_mnist_dir_from_environment(tmp_path, monkeypatch):
    _fake_mnist(tmp_path)
    monkeypatch.setenv("HWNET_MNIST_DIR", str(tmp_path))
    assert default_mnist_dir() == tmp_path
    assert mnist_available()
    assert load_dataset("mnist").test_x.shape == (2000, 4)


def test_mnist_full(tmp_path):
    rng = np.random.default_rng(2)
    _fake_mnist(tmp_path, n=30)
    assert not mnist_available(tmp_path, full=True)
    train = rng.integers(0, 256, size=(50, 2, 2))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, size=50))
    assert mnist_available(tmp_path, full=True)
    ds = load_dataset("mnist-full", mnist_dir=tmp_path)
    assert ds.train_x.shape == (50, 4) and ds.test_x.shape == (30, 4)
    np.testing.assert_array_equal(ds.train_x, train.reshape(50, 4))
    with pytest.raises(HwnetError, match="expected the 10000 MNIST t10k images, found 30"):
        load_dataset("mnist", mnist_dir=tmp_path)


def _load_error(folder, match):
    with pytest.raises(HwnetError, match=match) as info:
        load_dataset("mnist", mnist_dir=folder)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_mnist_missing(tmp_path):
    assert not mnist_available(tmp_path / "nowhere")
    msg = _load_error(tmp_path / "nowhere", "MNIST folder .*nowhere does not exist")
    assert "--mnist-dir" in msg
    assert not mnist_available(tmp_path)
    msg = _load_error(tmp_path, "no t10k-images-idx3-ubyte.gz")
    assert "--mnist-dir" in msg


def test_corrupt_idx_files(tmp_path):
    images, labels = _fake_mnist(tmp_path)
    img = tmp_path / "t10k-images-idx3-ubyte.gz"
    lab = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good_img, good_lab = img.read_bytes(), lab.read_bytes()
    raw = gzip.decompress(good_img)

    img.write_bytes(b"not gzip at all")
    _load_error(tmp_path, "t10k-images-idx3-ubyte.gz: cannot read this IDX file")
    img.write_bytes(good_img[: len(good_img) // 2])  # truncated gzip stream
    _load_error(tmp_path, "cannot read this IDX file")
    img.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + raw[4:]))  # wrong type byte
    _load_error(tmp_path, "not an unsigned-byte IDX file .*0x00000903")
    img.write_bytes(gzip.compress(raw[:-5]))  # payload shorter than the header says
    _load_error(tmp_path, "payload is 39995 bytes but its header \\(10000 x 2 x 2\\) needs 40000")
    img.write_bytes(gzip.compress(raw + b"\x00"))
    _load_error(tmp_path, "truncated or corrupt")
    img.write_bytes(gzip.compress(raw[:10]))
    _load_error(tmp_path, "IDX header truncated")
    img.write_bytes(gzip.compress(b"\x00"))
    _load_error(tmp_path, "not an IDX file")
    img.write_bytes(gzip.compress(_idx_bytes(images.reshape(10000, 4))))  # 2-D, not images
    _load_error(tmp_path, "expected a 3-D IDX array")
    img.write_bytes(good_img)

    lab.write_bytes(gzip.compress(_idx_bytes(labels[:9999])))
    _load_error(tmp_path, "holds 10000 images but t10k-labels-idx1-ubyte.gz holds 9999 labels")
    bad = labels.copy()
    bad[5] = 10
    lab.write_bytes(gzip.compress(_idx_bytes(bad)))
    _load_error(tmp_path, "label 10 is not a digit")
    lab.write_bytes(good_img)  # images where labels belong
    _load_error(tmp_path, "expected a 1-D IDX array of labels")
    lab.write_bytes(good_lab)
    assert load_dataset("mnist", mnist_dir=tmp_path).train_x.shape == (8000, 4)


def test_read_idx_missing(tmp_path):
    with pytest.raises(HwnetError, match="no such file"):
        read_idx(tmp_path / "x.gz")


# --- the real MNIST t10k files -----------------------------------------------------------------------------------

@pytest.mark.mnist
@requires_mnist
def test_real_mnist_split():
    ds = load_dataset("mnist")
    assert ds.train_x.shape == (8000, 784) and ds.test_x.shape == (2000, 784)
    assert ds.input_type == "uint8" and ds.input_max == 255
    assert ds.train_x.min() == 0 and ds.train_x.max() == 255
    assert set(np.unique(ds.train_y)) == set(range(10)) and set(np.unique(ds.test_y)) == set(range(10))
    # independent read of the first and last samples straight from the gzip bytes
    folder = default_mnist_dir()
    raw_images = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw_labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert struct.unpack(">IIII", raw_images[:16]) == (2051, 10000, 28, 28)
    np.testing.assert_array_equal(ds.train_x[0], np.frombuffer(raw_images[16:16 + 784], dtype=np.uint8))
    np.testing.assert_array_equal(ds.test_x[-1], np.frombuffer(raw_images[-784:], dtype=np.uint8))
    assert ds.train_y[0] == raw_labels[8] and ds.test_y[-1] == raw_labels[-1]
    again = load_dataset("mnist")
    np.testing.assert_array_equal(again.test_x, ds.test_x)
