"""Data sets for training and testing, as raw integer pixels. Nothing here downloads.

Every data set is a :class:`Dataset` whose inputs are the *raw integer* pixel values (``int64`` arrays of shape
``(samples, features)``) and whose ``input_type`` is the hwnet element type those values are legal in; the
network binarizes them itself (its first layer), so the integer model and the hardware see the same numbers.

``"digits"``
    scikit-learn's 8x8 handwritten digits (1,797 samples, values 0..16, ``uint5``; ships inside scikit-learn).
    Fixed split: ``numpy.random.default_rng(0).permutation(1797)``; the first 80% (1,437) of that order train,
    the last 20% (360) test.
``"mnist"``
    The MNIST t10k set (``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, 10,000 samples of 28x28,
    values 0..255, ``uint8``) from ``mnist_dir``: the first 8,000 train, the last 2,000 test.
``"mnist-full"``
    The full MNIST from ``mnist_dir``: ``train-*`` (60,000) train, ``t10k-*`` (10,000) test.

``mnist_dir`` defaults to the environment variable ``HWNET_MNIST_DIR``, else ``<repo root>/../shared/data/mnist``.
IDX files may be gzip-compressed (``<name>.gz``, looked for first) or plain (``<name>``). MNIST: Y. LeCun,
C. Cortes, C. Burges, CC BY-SA 3.0.
"""

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HwnetError

__all__ = ["Dataset", "load_dataset", "mnist_available", "default_mnist_dir", "read_idx", "DATASETS",
           "DIGITS_SEED", "DIGITS_TEST_FRACTION", "MNIST_TRAIN", "MNIST_TEST"]

DATASETS = ("digits", "mnist", "mnist-full")
DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2
MNIST_TRAIN = 8000
MNIST_TEST = 2000

_T10K_IMAGES = "t10k-images-idx3-ubyte"
_T10K_LABELS = "t10k-labels-idx1-ubyte"
_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"

# IDX magic numbers: two zero bytes, a type byte (0x08 = unsigned byte), a byte giving the number of dimensions.
_IDX_UBYTE = 0x08


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of raw integer inputs.

    Members
    -------
    name : str
    train_x, test_x : numpy.ndarray of int64, shape (samples, features)
        Raw pixel values, each legal in ``input_type`` and in ``0 .. input_max``.
    train_y, test_y : numpy.ndarray of int64, shape (samples,)
        Class labels ``0 .. classes - 1``.
    input_type : str
        hwnet element type name of the inputs (``"uint5"``, ``"uint8"``).
    input_max : int
        Largest pixel value the source can produce (16 for digits, 255 for MNIST).
    image_shape : tuple of int or None
        ``(H, W, C)`` when every sample is an image flattened row-major, channels fastest (NHWC): ``(8, 8, 1)``
        for digits, ``(28, 28, 1)`` for MNIST; None for data that is not an image. Convolutional layers need it.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    input_type: str
    input_max: int
    image_shape: tuple = None

    @property
    def input_size(self):
        return int(self.train_x.shape[1])

    @property
    def classes(self):
        return int(max(self.train_y.max(), self.test_y.max())) + 1

    def __repr__(self):
        return (f"Dataset({self.name!r}: {len(self.train_x)} train / {len(self.test_x)} test, "
                f"{self.input_size} x {self.input_type}, {self.classes} classes)")


def default_mnist_dir():
    """``$HWNET_MNIST_DIR`` if set, else ``<repo root>/../shared/data/mnist``."""
    env = os.environ.get("HWNET_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def _resolve_dir(mnist_dir):
    return default_mnist_dir() if mnist_dir is None else Path(mnist_dir)


def _find(directory, name):
    """Path of ``name.gz`` or ``name`` in ``directory``, or None."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def mnist_available(mnist_dir=None, *, full=False):
    """True when the MNIST t10k image and label files (and with ``full=True`` the train files) are present.

    Only checks that the files exist; :func:`load_dataset` validates their contents.
    """
    directory = _resolve_dir(mnist_dir)
    names = [_T10K_IMAGES, _T10K_LABELS] + ([_TRAIN_IMAGES, _TRAIN_LABELS] if full else [])
    return all(_find(directory, n) is not None for n in names)


def read_idx(path):
    """Read an unsigned-byte IDX file (gzip-compressed if its name ends in ``.gz``) into a uint8 array.

    The magic number, the dimension sizes and the payload length are all checked; any problem raises a
    one-line :class:`HwnetError` naming the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise HwnetError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HwnetError(f"{path}: cannot read this IDX file ({detail}); is it a complete download?") from None
    if len(raw) < 4:
        raise HwnetError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_UBYTE or not 1 <= ndim <= 4:
        raise HwnetError(f"{path}: not an unsigned-byte IDX file (magic number 0x{raw[:4].hex()}, expected "
                         f"0x0000080N with N the number of dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise HwnetError(f"{path}: IDX header truncated ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        shape = " x ".join(map(str, dims))
        raise HwnetError(f"{path}: IDX payload is {len(raw) - header} bytes but its header ({shape}) needs "
                         f"{expected}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_mnist_pair(directory, images_name, labels_name):
    hint = "pass --mnist-dir (or set HWNET_MNIST_DIR) to a folder holding the MNIST IDX files"
    if not directory.is_dir():
        raise HwnetError(f"MNIST folder {directory} does not exist; {hint}")
    paths = []
    for name in (images_name, labels_name):
        p = _find(directory, name)
        if p is None:
            raise HwnetError(f"{directory}: no {name}.gz (or {name}) here; {hint}")
        paths.append(p)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3:
        raise HwnetError(f"{paths[0]}: expected a 3-D IDX array (images x rows x cols), got {images.ndim}-D")
    if labels.ndim != 1:
        raise HwnetError(f"{paths[1]}: expected a 1-D IDX array of labels, got {labels.ndim}-D")
    if images.shape[0] != labels.shape[0]:
        raise HwnetError(f"{directory}: {paths[0].name} holds {images.shape[0]} images but {paths[1].name} "
                         f"holds {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise HwnetError(f"{paths[1]}: label {int(labels.max())} is not a digit 0..9")
    x = images.reshape(images.shape[0], -1).astype(np.int64)
    return x, labels.astype(np.int64), paths[0], (int(images.shape[1]), int(images.shape[2]), 1)


def _load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.data).astype(np.int64)
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    n_train = int(len(x) * (1 - DIGITS_TEST_FRACTION))
    tr, te = order[:n_train], order[n_train:]
    return Dataset(name="digits", train_x=x[tr], train_y=y[tr], test_x=x[te], test_y=y[te],
                   input_type="uint5", input_max=16, image_shape=(8, 8, 1))


def _load_mnist(mnist_dir):
    directory = _resolve_dir(mnist_dir)
    x, y, images_path, shape = _read_mnist_pair(directory, _T10K_IMAGES, _T10K_LABELS)
    need = MNIST_TRAIN + MNIST_TEST
    if len(x) != need:
        raise HwnetError(f"{images_path}: expected the {need} MNIST t10k images, found {len(x)}; for other IDX "
                         f"files use the 'mnist-full' data set")
    return Dataset(name="mnist", train_x=x[:MNIST_TRAIN], train_y=y[:MNIST_TRAIN],
                   test_x=x[MNIST_TRAIN:], test_y=y[MNIST_TRAIN:], input_type="uint8", input_max=255,
                   image_shape=shape)


def _load_mnist_full(mnist_dir):
    directory = _resolve_dir(mnist_dir)
    train_x, train_y, train_path, shape = _read_mnist_pair(directory, _TRAIN_IMAGES, _TRAIN_LABELS)
    test_x, test_y, test_path, test_shape = _read_mnist_pair(directory, _T10K_IMAGES, _T10K_LABELS)
    if shape != test_shape:
        raise HwnetError(f"{directory}: train images are {shape[0]}x{shape[1]} but test images are "
                         f"{test_shape[0]}x{test_shape[1]}")
    return Dataset(name="mnist-full", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   input_type="uint8", input_max=255, image_shape=shape)


def load_dataset(name, *, mnist_dir=None):
    """Load data set ``name`` (``"digits"``, ``"mnist"`` or ``"mnist-full"``) as a :class:`Dataset`.

    ``mnist_dir`` is the folder holding the MNIST IDX files (ignored for ``digits``); see the module notes for
    the default. Missing or corrupt files raise a one-line :class:`HwnetError`.
    """
    if name == "digits":
        return _load_digits()
    if name == "mnist":
        return _load_mnist(mnist_dir)
    if name == "mnist-full":
        return _load_mnist_full(mnist_dir)
    raise HwnetError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
