"""Brevitas baseline: the FINN-style fully connected network (TFC/SFC/LFC) trained with Brevitas, on hwnet's data.

This is the reference point hwnet's training methods are compared against (bench/bench_methods.py): the same
MLP that FINN users train with Brevitas, built as Brevitas's own ``brevitas_examples/bnn_pynq/models/FC.py``
builds it, with that example's quantizers (``CommonWeightQuant``, ``CommonActQuant``: constant scale 1,
narrow-range signed, binary at 1 bit, integer above) and its ``TensorNorm``:

    pixels / input_max (0 .. 1) -> 2 x - 1 -> QuantIdentity(CommonActQuant, 1 bit)      # bipolar input
      -> Dropout(0.2)
      -> [QuantLinear(bias=False, CommonWeightQuant, weight_bits) -> BatchNorm1d
          -> QuantIdentity(CommonActQuant, act_bits) -> Dropout(0.2)]  per hidden layer
      -> QuantLinear(bias=False, CommonWeightQuant, weight_bits) -> TensorNorm

Weights are initialized uniformly in ``[-1, 1]`` and clipped to ``[-1, 1]`` after every step, as in the
example. At 1 bit the input, weights and activations are all ``±1`` (W1A1).

Training runs through hwnet's own loop (:func:`hwnet.train.trainer.fit`) rather than the example's trainer, so the
comparison is of the models and quantizers, not of the schedules: the same raw integer arrays, Adam with a cosine
learning-rate decay to 1% of ``lr`` stepped per batch, the training set reshuffled every epoch with
``numpy.random.default_rng(seed)``, ``torch.manual_seed(seed)`` before the model is built (initialization and
dropout), a lone leftover sample per epoch skipped (batch norm needs two), the last model evaluated (no model
selection). The loss is cross-entropy, as hwnet's (the example uses a squared hinge). Two differences from the
example: its learning rate is fixed with a halving every 40 epochs and the best epoch on the test set is kept; here
neither. hwnet's default input noise is off (``input_noise=0``); the example does no augmentation on MNIST.

Measured by the project with Brevitas 0.13: digits 3x64 W1A1 ~93%, MNIST split 784-64x3-10 W1A1 ~93.8%,
784-256x3-10 W1A1 ~96.3% (20 epochs). Standalone use::

    python bench/brevitas_baseline.py [--dataset digits] [--hidden 64,64,64] [--epochs 40] [--seed 0]
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

__all__ = ["BrevitasMLP", "train_brevitas_mlp", "brevitas_version"]

DROPOUT = 0.2  # brevitas_examples.bnn_pynq.models.FC.DROPOUT


def brevitas_version():
    """The installed Brevitas version, or None when it is not installed."""
    try:
        from importlib.metadata import version
        return version("brevitas")
    except Exception:
        return None


def _brevitas():
    """Brevitas's layers and the bnn_pynq example's quantizers; a clear error when Brevitas is missing."""
    try:
        from brevitas.nn import QuantIdentity, QuantLinear
        from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
        from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
    except ImportError as exc:
        raise RuntimeError(f"the Brevitas baseline needs brevitas ({exc}); install it with "
                           f"`.venv/bin/pip install -c constraints.txt -e '.[bench]'`") from None
    return QuantIdentity, QuantLinear, CommonActQuant, CommonWeightQuant, TensorNorm


class BrevitasMLP(nn.Module):
    """The bnn_pynq ``FC`` model (see the module docstring) on flat raw integer inputs ``0 .. input_max``."""

    def __init__(self, input_size, hidden, classes, input_max, *, weight_bits=1, act_bits=1, in_bits=1,
                 dropout=DROPOUT):
        super().__init__()
        QuantIdentity, QuantLinear, CommonActQuant, CommonWeightQuant, TensorNorm = _brevitas()
        self.input_max = int(input_max)
        self.features = nn.ModuleList([QuantIdentity(act_quant=CommonActQuant, bit_width=in_bits),
                                       nn.Dropout(p=dropout)])
        width = int(input_size)
        for out in hidden:
            self.features.extend([
                QuantLinear(width, out, bias=False, weight_bit_width=weight_bits, weight_quant=CommonWeightQuant),
                nn.BatchNorm1d(out),
                QuantIdentity(act_quant=CommonActQuant, bit_width=act_bits),
                nn.Dropout(p=dropout)])
            width = out
        self.features.append(QuantLinear(width, classes, bias=False, weight_bit_width=weight_bits,
                                         weight_quant=CommonWeightQuant))
        self.features.append(TensorNorm())
        self._linears = [m for m in self.features if isinstance(m, QuantLinear)]
        for m in self._linears:
            nn.init.uniform_(m.weight.data, -1, 1)

    @torch.no_grad()
    def clip_weights(self, lo=-1.0, hi=1.0):
        for m in self._linears:
            m.weight.data.clamp_(lo, hi)

    def penalty(self):
        """No regularizer (the interface :func:`hwnet.train.trainer.fit` trains through)."""
        return torch.tensor(0.0)

    def after_step(self):
        """Clip the weights to ``[-1, 1]`` after every step, as the bnn_pynq example does."""
        self.clip_weights()

    def forward(self, x):
        x = torch.as_tensor(x).to(torch.float32) / self.input_max  # raw pixels -> 0 .. 1, as ToTensor() gives
        x = 2.0 * x - 1.0
        for mod in self.features:
            x = mod(x)
        return x


def train_brevitas_mlp(dataset, *, hidden, weight_bits=1, act_bits=1, epochs, batch_size, lr, seed,
                       input_noise=0.0, dropout=DROPOUT, progress=None):
    """Train the Brevitas FC model (module docstring) ``input_size -> hidden... -> classes`` on ``dataset`` with
    hwnet's own training loop (:func:`hwnet.train.trainer.fit`, cross-entropy, weights clipped to ``[-1, 1]``
    after every step).

    ``dataset`` is an :class:`hwnet.train.data.Dataset` (raw integer pixels); ``hidden`` a sequence of widths;
    ``input_noise`` as in :func:`~hwnet.train.trainer.fit` (0: off). ``progress(line)`` is called once per epoch.

    Returns ``{"test_accuracy", "train_accuracy", "seconds", "history"}``: the last epoch's eval-mode accuracies
    (0..1), the training wall time in seconds and :func:`~hwnet.train.trainer.fit`'s history.
    """
    from hwnet.train.trainer import evaluate, fit

    torch.manual_seed(int(seed))
    model = BrevitasMLP(dataset.input_size, tuple(int(h) for h in hidden), dataset.classes, dataset.input_max,
                        weight_bits=weight_bits, act_bits=act_bits, dropout=dropout)
    start = time.perf_counter()
    history = fit(model, dataset, epochs=epochs, batch_size=batch_size, lr=lr, input_noise=input_noise, seed=seed,
                  progress=progress)
    return {"test_accuracy": evaluate(model, dataset.test_x, dataset.test_y),
            "train_accuracy": evaluate(model, dataset.train_x, dataset.train_y),
            "seconds": time.perf_counter() - start, "history": history}


def main(argv=None):
    from hwnet.train.data import load_dataset
    from hwnet.train.trainer import DEFAULTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist", "mnist-full"))
    p.add_argument("--hidden", default="64,64,64", help="hidden widths, comma-separated (default 64,64,64)")
    p.add_argument("--weight-bits", type=int, default=1)
    p.add_argument("--act-bits", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="default: hwnet's for the data set")
    p.add_argument("--batch-size", type=int, default=None, help="default: hwnet's for the data set")
    p.add_argument("--lr", type=float, default=None, help="default: hwnet's for the data set")
    p.add_argument("--input-noise", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    d = DEFAULTS[args.dataset]
    hidden = tuple(int(h) for h in args.hidden.split(","))
    r = train_brevitas_mlp(ds, hidden=hidden, weight_bits=args.weight_bits, act_bits=args.act_bits,
                           epochs=args.epochs or d["epochs"], batch_size=args.batch_size or d["batch_size"],
                           lr=args.lr or d["lr"], seed=args.seed, input_noise=args.input_noise,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
    shape = "-".join(map(str, (ds.input_size, *hidden, ds.classes)))
    print(f"Brevitas {brevitas_version()} {ds.name} {shape} W{args.weight_bits}A{args.act_bits}: test "
          f"{100 * r['test_accuracy']:.2f}%, train {100 * r['train_accuracy']:.2f}%, {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
