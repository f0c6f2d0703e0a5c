"""Training, evaluation and checkpoints for every model hwnet trains.

:func:`fit` is the loop every method shares: Adam on the cross-entropy of the logits (or an autoencoder's squared
error) plus the model's ``penalty()``, with a cosine learning-rate decay to 1% of ``lr`` over the run,
``model.after_step()`` after every step (clipping, dynamic fixed point updates), and random integer noise added
to the raw training pixels (``input_noise``). Training stops after ``epochs``; the last model is returned (no
model selection on the test set). The same seed gives the same model on one machine (same torch build and thread
count); nothing else is promised. :func:`train_binarynet` trains the BinaryNet MLP; the other methods are in
:mod:`hwnet.train.methods`.

Checkpoints are ``torch.save`` files holding only plain values (str, int, float, bool, lists, dicts, tensors)::

    {"format": "hwnet-binarynet" | "hwnet-qnet", "version": 1,
     "config": {"input_size": ..., "hidden": [...], ...},   # BinarizedMLP(...) / QuantNet.from_config(...)
     "state_dict": {...}, "meta": {...}}

A QuantNet's config carries its whole architecture, convolutional layers included (``image``, ``conv``).

and are read back with ``torch.load(path, weights_only=True)``: loading one never runs code.
"""

import math
import os
import pickle
import re
import time
import warnings

import numpy as np
import torch

from ..errors import HwnetError
from .binarynet import BinarizedMLP
from .qnet import QuantNet

__all__ = ["fit", "reconstruction_error", "QNET_FORMAT", "train_binarynet", "evaluate", "predict",
           "save_checkpoint", "load_checkpoint", "DEFAULTS",
           "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "hwnet-binarynet"
#: Format of a :class:`~hwnet.train.qnet.QuantNet` checkpoint (every method but BinaryNet).
QNET_FORMAT = "hwnet-qnet"
CHECKPOINT_VERSION = 1

#: Default training settings per data set (keyword arguments of :func:`train_binarynet`).
DEFAULTS = {
    # 64-128-128-10: 95-96% test accuracy on the digits split, seeds 0..4, ~3 s each on 2 CPU cores.
    "digits": {"hidden": (128, 128), "epochs": 40, "batch_size": 64, "lr": 0.01, "input_noise": 0.25},
    # TFC shape 784-64-64-64-10: ~94% on the t10k split (first 8,000 train / last 2,000 test), ~25 s.
    "mnist": {"hidden": (64, 64, 64), "epochs": 40, "batch_size": 100, "lr": 0.02, "input_noise": 0.25},
    # Same shape on the full 60,000 training images (not benchmarked here).
    "mnist-full": {"hidden": (64, 64, 64), "epochs": 10, "batch_size": 100, "lr": 0.02, "input_noise": 0.25},
}


def _defaults(dataset):
    return DEFAULTS.get(dataset.name, DEFAULTS["digits"])


#: The most values one layer's output may hold in one batch of :func:`predict` (a convolution's output images
#: count every pixel: ``batch * OH * OW * OC``); larger batches are made smaller.
PREDICT_VALUES = 1 << 22


@torch.no_grad()
def predict(model, x, batch=4096):
    """Class per sample (int64): argmax of ``model``'s logits in eval mode on raw inputs ``x``, ties to the lowest
    index (equal to :func:`hwnet.golden.classify` on the lowered network's outputs). Batches of ``batch`` samples,
    fewer where a convolution's output images would exceed :data:`PREDICT_VALUES` values."""
    widest = max([q.out_size for q in getattr(model, "conv_layers", [])], default=1)
    batch = max(1, min(batch, PREDICT_VALUES // widest))
    was_training = model.training
    model.eval()
    try:
        x = torch.as_tensor(np.asarray(x))
        out = [model(x[i:i + batch]).argmax(dim=1) for i in range(0, len(x), batch)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)




def evaluate(model, x, y):
    """Accuracy (0..1) of ``model`` in eval mode on raw inputs ``x`` (samples, features) and labels ``y``."""
    y = np.asarray(y)
    if len(y) == 0:
        raise HwnetError("cannot evaluate on an empty set of samples")
    if len(np.asarray(x)) != len(y):
        raise HwnetError(f"{len(np.asarray(x))} inputs but {len(y)} labels")
    return float(np.mean(predict(model, x) == y))


def _check_int(value, what, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise HwnetError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_settings(epochs, batch_size, lr, input_noise, seed):
    epochs = _check_int(epochs, "epochs")
    batch_size = _check_int(batch_size, "batch size")
    if isinstance(input_noise, bool) or not isinstance(input_noise, (int, float)) or not 0 <= input_noise <= 1:
        raise HwnetError(f"input noise must be a number between 0 and 1, got {input_noise!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise HwnetError(f"learning rate must be a positive number, got {lr!r}")
    return epochs, batch_size, float(lr), float(input_noise), _check_int(seed, "seed", minimum=0)


def reconstruction_error(model, x):
    """Mean squared error of an autoencoder's eval-mode output against its input scaled to ``0 .. 1``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            xt = torch.as_tensor(np.asarray(x)).to(torch.float32)
            return float(torch.mean((model(xt) - xt / model.input_max) ** 2))
    finally:
        model.train(was_training)


def fit(model, dataset, *, epochs, batch_size, lr, input_noise=0.0, seed=0, progress=None, after_epoch=None,
        label=""):
    """Train ``model`` on ``dataset`` in place; the loop every method shares.

    Adam on the loss (cross-entropy of the logits, or for a ``task == "regress"`` model the squared error
    against the input scaled to ``0 .. 1``) plus ``model.penalty()``, a cosine learning-rate decay to 1% of
    ``lr``, ``model.after_step()`` after every optimizer step (clipping, dynamic fixed point updates), and
    ``after_epoch(model, epoch)`` after every epoch if given (e.g. weight clustering). ``input_noise`` is a
    training-time augmentation: every raw pixel of every training batch gets an independent integer offset drawn
    uniformly from ``±input_noise * input_max`` (then clipped to ``0 .. input_max``).

    Returns one dict per epoch: ``epoch``, ``loss``, ``train_accuracy``/``test_accuracy`` (eval mode, no noise;
    for regression ``train_mse``/``test_mse``) and ``seconds``.
    """
    epochs, batch_size, lr, input_noise, seed = _check_settings(epochs, batch_size, lr, input_noise, seed)
    regress = getattr(model, "task", "classify") == "regress"
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(dataset.train_x) / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    train_x = torch.from_numpy(np.asarray(dataset.train_x, dtype=np.float32))
    train_y = torch.from_numpy(np.asarray(dataset.train_y, dtype=np.int64))
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(train_x)))
        total_loss, seen = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:  # batch norm needs two samples; a lone leftover sample is skipped
                continue
            optimizer.zero_grad(set_to_none=True)
            xb = train_x[idx]
            if input_noise:
                noise = rng.uniform(-input_noise, input_noise, size=tuple(xb.shape)) * dataset.input_max
                xb = torch.clamp(xb + torch.from_numpy(np.rint(noise).astype(np.float32)), 0, dataset.input_max)
            out = model(xb)
            if regress:
                loss = torch.mean((out - train_x[idx] / dataset.input_max) ** 2)
            else:
                loss = torch.nn.functional.cross_entropy(out, train_y[idx])
            (loss + model.penalty()).backward()
            optimizer.step()
            schedule.step()
            model.after_step()
            total_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        if after_epoch is not None:
            after_epoch(model, epoch)
        model.eval()
        record = {"epoch": epoch, "loss": total_loss / max(seen, 1)}
        if regress:
            record["train_mse"] = reconstruction_error(model, dataset.train_x)
            record["test_mse"] = reconstruction_error(model, dataset.test_x)
            text = f"train mse {record['train_mse']:.4f}, test mse {record['test_mse']:.4f}"
        else:
            record["train_accuracy"] = evaluate(model, dataset.train_x, dataset.train_y)
            record["test_accuracy"] = evaluate(model, dataset.test_x, dataset.test_y)
            text = f"train {100 * record['train_accuracy']:.2f}%, test {100 * record['test_accuracy']:.2f}%"
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        if progress is not None:
            progress(f"{label}epoch {epoch}/{epochs}: loss {record['loss']:.4f}, {text} ({record['seconds']:.1f} s)")
    model.eval()
    return history


def train_binarynet(dataset, *, hidden=None, epochs=None, batch_size=None, lr=None, input_noise=None, seed=0,
                    progress=None):
    """Train a :class:`BinarizedMLP` on ``dataset`` (a :class:`~hwnet.train.data.Dataset`) with :func:`fit`.

    Arguments left at None take the data set's entry in :data:`DEFAULTS`; the latent weights are clipped to
    ``[-1, 1]`` after every step. ``progress``, if given, is called once per epoch with a one-line summary.

    Returns ``(model, history)``: the model in eval mode and :func:`fit`'s history.
    """
    d = _defaults(dataset)
    hidden = d["hidden"] if hidden is None else hidden
    settings = _check_settings(d["epochs"] if epochs is None else epochs,
                               d["batch_size"] if batch_size is None else batch_size, d["lr"] if lr is None else lr,
                               d.get("input_noise", 0.0) if input_noise is None else input_noise, seed)
    torch.manual_seed(settings[-1])
    model = BinarizedMLP(dataset.input_size, hidden, dataset.classes, dataset.input_max)
    history = fit(model, dataset, **dict(zip(("epochs", "batch_size", "lr", "input_noise", "seed"), settings)),
                  progress=progress)
    return model, history


# --- checkpoints ---------------------------------------------------------------------------------------------

_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value, where):
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise HwnetError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, where)
        return
    raise HwnetError(f"{where}: only str, int, float, bool, None, lists and dicts can be stored, "
                     f"got {type(value).__name__}")


def save_checkpoint(model, path, *, meta=None):
    """Write ``model`` (a :class:`BinarizedMLP` or :class:`QuantNet`) and ``meta`` (a dict of plain values) to
    ``path``, atomically."""
    formats = {BinarizedMLP: CHECKPOINT_FORMAT, QuantNet: QNET_FORMAT}
    if type(model) not in formats:
        raise HwnetError(f"can only save a BinarizedMLP or a QuantNet, got {type(model).__name__}")
    meta = dict(meta or {})
    _check_plain(meta, "checkpoint meta")
    config = model.config()
    _check_plain(config, "checkpoint config")
    payload = {"format": formats[type(model)], "version": CHECKPOINT_VERSION, "config": config,
               "state_dict": {k: v.detach().clone().cpu() for k, v in model.state_dict().items()},
               "meta": meta}
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except OSError as exc:
        raise HwnetError(f"{path}: cannot write checkpoint ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _short(exc):
    """A short one-line description of a torch/pickle exception (torch's own messages run to paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    text = text.splitlines()[0] if text else ""
    text = text.split(". ")[0].rstrip(".")
    if len(text) > 100:
        text = text[:97] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``(model, meta)`` with the model in eval
    mode. Every problem (missing, not a torch file, truncated, wrong contents) raises a one-line HwnetError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HwnetError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on foreign pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if match:
            raise HwnetError(f"{path}: refusing to load it: the file holds a {match.group(1)} object, and hwnet "
                             f"checkpoints hold only tensors and plain values") from None
        raise HwnetError(f"{path}: not a readable hwnet checkpoint: not a torch file, or truncated or corrupt "
                         f"({_short(exc)})") from None
    except Exception as exc:  # torch raises many kinds (RuntimeError, EOFError, KeyError, ...)
        raise HwnetError(f"{path}: not a readable hwnet checkpoint: not a torch file, or truncated or corrupt "
                         f"({_short(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, QNET_FORMAT):
        raise HwnetError(f"{path}: not an hwnet checkpoint (no 'format': {CHECKPOINT_FORMAT!r} or "
                         f"{QNET_FORMAT!r} entry)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise HwnetError(f"{path}: checkpoint version {payload.get('version')!r} is not supported (this hwnet "
                         f"reads version {CHECKPOINT_VERSION})")
    for key, kind in (("config", dict), ("state_dict", dict), ("meta", dict)):
        if not isinstance(payload.get(key), kind):
            raise HwnetError(f"{path}: checkpoint entry {key!r} is missing or not a {kind.__name__}")
    config = payload["config"]
    if payload["format"] == QNET_FORMAT:
        try:
            model = QuantNet.from_config(config)
        except HwnetError as exc:
            raise HwnetError(f"{path}: checkpoint config is not a valid model ({exc})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise HwnetError(f"{path}: checkpoint config is not a valid model ({_short(exc)})") from None
    else:
        missing = [k for k in ("input_size", "hidden", "classes", "input_max") if k not in config]
        if missing:
            raise HwnetError(f"{path}: checkpoint config lacks {', '.join(missing)}")
        model = BinarizedMLP(config["input_size"], config["hidden"], config["classes"], config["input_max"])
    state = payload["state_dict"]
    expected = model.state_dict()
    if set(state) != set(expected):
        lacking = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        raise HwnetError(f"{path}: checkpoint weights do not match its config (missing {lacking[:3]}, "
                         f"unexpected {extra[:3]})")
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise HwnetError(f"{path}: checkpoint tensor {key!r} has shape {shape}, the config needs "
                             f"{tuple(ref.shape)}")
        if value.is_floating_point() != ref.is_floating_point():
            raise HwnetError(f"{path}: checkpoint tensor {key!r} has dtype {value.dtype}, expected {ref.dtype}")
    model.load_state_dict(state)
    model.eval()
    return model, payload["meta"]
