"""Training and lowering: every training method's model in torch, lowered exactly into the integer IR.

Public API (imported lazily, so ``hwnet.train.data`` works without loading torch):

- :func:`load_dataset`, :func:`mnist_available`, :class:`Dataset` (``hwnet.train.data``; no torch)
- :func:`train` and :data:`METHODS`, every training method (``hwnet.train.methods``; docs/methods.md)
- :class:`QuantNet`, the model every method but BinaryNet's MLP builds from its quantizers, dense and
  convolutional (:class:`QuantConv2d`) layers (``hwnet.train.qnet``)
- :class:`BinarizedMLP` and its building blocks (``hwnet.train.binarynet``)
- :func:`fit`, :func:`train_binarynet`, :func:`evaluate`, :func:`predict`, :func:`save_checkpoint`,
  :func:`load_checkpoint`, :data:`DEFAULTS` (``hwnet.train.trainer``)
- the methods' quantizers, forward and backward as their papers define them (``hwnet.train.quantizers``),
  optimal 1-D k-means (``hwnet.train.ckmeans``) and the semidiscrete decomposition (``hwnet.train.sdd``)
- :func:`check_lowering` here; :func:`hwnet.train.lower.lower` only from its module (the package attribute
  ``lower`` is the submodule ``hwnet.train.lower``, so ``from hwnet.train.lower import lower``)

Nothing in this package imports Amaranth.
"""

import importlib

__all__ = ["Dataset", "load_dataset", "mnist_available", "train", "METHODS", "QuantNet", "QuantConv2d", "fit",
           "BinarizedMLP", "BinaryLinear", "SignSTE",
           "train_binarynet", "evaluate", "predict", "save_checkpoint", "load_checkpoint", "DEFAULTS",
           "check_lowering"]

_HOME = {
    "Dataset": "data", "load_dataset": "data", "mnist_available": "data",
    "train": "methods", "METHODS": "methods", "QuantNet": "qnet", "QuantConv2d": "qnet", "fit": "trainer",
    "BinarizedMLP": "binarynet", "BinaryLinear": "binarynet", "SignSTE": "binarynet",
    "train_binarynet": "trainer", "evaluate": "trainer", "predict": "trainer", "save_checkpoint": "trainer",
    "load_checkpoint": "trainer", "DEFAULTS": "trainer",
    "check_lowering": "lower",
}


def __getattr__(name):
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
