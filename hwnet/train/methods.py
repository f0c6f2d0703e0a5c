"""The training methods hwnet offers (``hwnet train --method NAME``): what each builds and how it trains.

Every method builds a :class:`~hwnet.train.qnet.QuantNet` from its quantizers and trains it with the shared loop
(:func:`hwnet.train.trainer.fit`), except BinaryNet without convolutional layers, which keeps its own
:class:`BinarizedMLP` (the demo's model). Convolutional layers (``conv``, :class:`~hwnet.train.qnet.QuantConv2d`)
go in front of the dense ones for every method that can take them. :func:`train` is the entry point;
:data:`METHODS` lists the methods with their options and defaults. docs/methods.md explains each method, what
hardware it lowers to and what it costs.
"""

from dataclasses import dataclass, field

import copy
import math

import numpy as np
import torch
from torch import nn

from ..errors import HwnetError
from .binarynet import BinarizedMLP
from .qnet import QuantNet, ShiftAttentionWeights, conv_spec
from .trainer import _defaults, evaluate, fit, reconstruction_error

__all__ = ["Method", "METHODS", "train", "resolve_options", "check_conv", "real_weight_accuracy",
           "reestimate_batchnorm"]


@dataclass(frozen=True)
class Method:
    """One training method.

    Members
    -------
    name : str
        The ``--method`` name.
    paper : str
        The paper it implements.
    options : dict
        Method options and their defaults (``hwnet train --option key=value``).
    build : callable
        ``build(dataset, hidden, options, conv=None) -> model`` (a :class:`QuantNet`; BinaryNet without ``conv``
        builds its :class:`BinarizedMLP`). Methods with a ``conv_refusal`` take no ``conv``; methods with
        ``needs_conv`` always get one.
    after_epoch : callable or None
        ``after_epoch(model, epoch, epochs, options)``, called after every epoch.
    finish : callable or None
        ``finish(model, dataset, options, refit) -> model``, called once after training (batch norm
        re-estimation, BitPruning's rounding and fine-tuning); ``refit(model, epochs)`` trains again with the
        same settings, appending to the history.
    extras : callable or None
        ``extras(model, dataset, options) -> dict`` of extra results (e.g. BinaryConnect's real-weight accuracy).
    task : str
        ``"classify"`` or ``"regress"``.
    lr_scale : float
        Multiplies the data set's default learning rate (an explicit ``lr`` is taken as given).
    conv_refusal : str or None
        Why the method cannot take convolutional layers (None: it can).
    needs_conv : str or None
        Why the method needs convolutional layers (None: it does not).
    """

    name: str
    paper: str
    options: dict = field(default_factory=dict)
    build: object = None
    after_epoch: object = None
    finish: object = None
    extras: object = None
    task: str = "classify"
    lr_scale: float = 1.0
    conv_refusal: str = None
    needs_conv: str = None


def _mlp(dataset, hidden, outputs=None, conv=None, **kwargs):
    """A :class:`QuantNet` for ``dataset``: ``conv`` layers (on the data set's image shape) if any, then
    ``hidden``."""
    if conv and getattr(dataset, "image_shape", None) is None:
        raise HwnetError(f"data set {dataset.name!r} has no image shape, so it cannot feed convolutional layers")
    image = dataset.image_shape if conv else None
    return QuantNet(dataset.input_size, hidden, dataset.classes if outputs is None else outputs, dataset.input_max,
                    image=image, conv=conv or None, **kwargs)


def _real_forward(model, x):
    """Logits of a :class:`QuantNet` computed with its *real* (latent) weights, activations still quantized."""
    return model.real_weight_logits(torch.as_tensor(np.asarray(x)))


@torch.no_grad()
def reestimate_batchnorm(model, x, forward=None, batch=256):
    """Recompute every batch norm's running statistics over the inputs ``x`` (cumulative averages over batches
    of ``batch``), with everything else in eval mode: the quantizers deterministic, as inference runs them.

    Stochastic methods need this: during training the batch norms saw the spread of *sampled* weights, and
    inference uses the deterministic ones. ``forward(model, x)`` defaults to ``model(x)``."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    model.eval()
    x = torch.as_tensor(np.asarray(x))
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for i in range(0, len(x), batch):
            if len(x[i:i + batch]) >= 2:
                (forward or (lambda mod, xb: mod(xb)))(model, x[i:i + batch])
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()


def real_weight_accuracy(model, dataset):
    """Test accuracy of a copy of ``model`` evaluated with its real (latent) weights, batch norm statistics
    re-estimated for them on the training set: how BinaryConnect's stochastic runs were evaluated."""
    real = copy.deepcopy(model)
    reestimate_batchnorm(real, dataset.train_x, forward=_real_forward)
    with torch.no_grad():
        logits = _real_forward(real, dataset.test_x)
    return float(np.mean(logits.argmax(dim=1).numpy() == np.asarray(dataset.test_y)))


def _finish_stochastic(model, dataset, options, refit):
    """After stochastic training, re-estimate batch norm for the deterministic inference weights."""
    if options.get("stochastic"):
        reestimate_batchnorm(model, dataset.train_x)
    return model


def _bitpruning(ds, hidden, o, conv=None):
    w = {"kind": "learned-bits", "init_bits": o["init_bits"], "min_bits": 2, "max_bits": o["init_bits"]}
    a = {"kind": "learned-bits", "init_bits": o["init_bits"], "min_bits": 1, "max_bits": o["init_bits"]}
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight=w, act=a,
                bit_cost={"kind": o["cost"], "weight": o["reg"]})


def _bitpruning_finish(model, dataset, options, refit):
    """Round every learned bitlength up, rebuild the model with those fixed bitlengths (QNN's quantizers) and
    fine-tune it."""
    config = model.config()
    config["weight"] = [q.quantizer.fixed() for q in model.hidden_linear]
    config["act"] = [a.fixed() for a in model.hidden_act]
    config["final_weight"] = model.final.quantizer.fixed()
    config["bit_cost"] = None
    fixed = QuantNet.from_config(config)
    state = {k: v for k, v in model.state_dict().items() if k in fixed.state_dict()}
    fixed.load_state_dict(state, strict=False)
    refit(fixed, max(1, round(options["finetune"] * refit.epochs)))
    return fixed


def _ffn_base(ds, hidden, o):
    return _mlp(ds, hidden, input={"kind": "raw"}, weight={"kind": "real"},
                act={"kind": "uniform", "bits": o["act_bits"]})


def _ffn_finish(model, dataset, options, refit):
    """Fixed-Point Factorized Networks: decompose every trained real weight matrix with the semidiscrete
    decomposition, ``W ~ X diag(d) Y^T``, rebuild the network with factorized layers (ternary ``Y^T``, then
    ``X diag(d)`` with ``d`` rounded to powers of two), and fine-tune with real shadow copies of ``X`` and ``Y``."""
    from .sdd import sdd, sdd_error
    linears = list(model.hidden_linear) + [model.final]
    ranks = [max(1, round(options["rank"] * min(q.in_features, q.out_features))) for q in linears]
    config = model.config()
    config["factor"] = {"ranks": ranks, "bits": options["pot_bits"]}
    factored = QuantNet.from_config(config)
    ours = factored.state_dict()  # batch norms and the output scale carry over; the layers are replaced
    factored.load_state_dict({k: v for k, v in model.state_dict().items()
                              if k in ours and v.shape == ours[k].shape}, strict=False)
    errors = []
    with torch.no_grad():
        for source, target in zip(linears, list(factored.hidden_linear) + [factored.final]):
            w = source.weight.detach().double().numpy()
            X, d, Y = sdd(w, target.rank)
            errors.append(sdd_error(w, X, d, Y) / max(np.linalg.norm(w), 1e-30))
            target.inner.weight.copy_(torch.from_numpy(Y.T.astype(np.float32)))
            target.outer.weight.copy_(torch.from_numpy(X.astype(np.float32)))
            target.quantizer.d.copy_(torch.from_numpy(np.maximum(d, 1e-12).astype(np.float32)))
            if source.bias is not None:
                target.outer.bias.copy_(source.bias)
    factored.sdd_relative_errors = [round(float(e), 4) for e in errors]
    factored.base_test_accuracy = evaluate(model, dataset.test_x, dataset.test_y)
    refit(factored, max(1, round(options["finetune"] * refit.epochs)))
    return factored


def _ffn_extras(model, dataset, options):
    return {"ranks": list(model.factor["ranks"]), "sdd_relative_errors": model.sdd_relative_errors,
            "full_precision_test_accuracy": model.base_test_accuracy}


def _bitpruning_extras(model, dataset, options):
    bits = [(str(q.quantizer.weight_type), str(a.out_type)) for q, a in zip(model.hidden_linear, model.hidden_act)]
    return {"bitlengths": [list(b) for b in bits] + [[str(model.final.quantizer.weight_type), None]],
            "lut4_estimate_at_128_cycles": round(model.lut_estimate(128), 1)}


def _cluster(model, epoch, epochs, options):
    """Codebook layers: cluster the weights after every epoch (the paper's periodic clustering), so evaluation
    and the end of training always see weights that are exactly the codebook."""
    model.cluster_()


def _binarynet(ds, hidden, o, conv=None):
    """BinaryNet: the :class:`BinarizedMLP` (binarized input layer), or with ``conv`` its CNN as a QuantNet:
    the raw multi-bit pixels into the first convolution (an add/subtract layer in hardware), sign weights (gated
    straight-through, no scale), batch norm and sign activations everywhere else."""
    if not conv:
        return BinarizedMLP(ds.input_size, hidden, ds.classes, ds.input_max)
    model = _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight={"kind": "binary", "mode": "ste"},
                 act={"kind": "sign", "mode": "ste"})
    with torch.no_grad():  # as the BinarizedMLP: logits of order one at the start (accumulators ~ sqrt(fan-in))
        model.log_scale.fill_(-0.5 * math.log(model.final.in_features))
    return model


def _binaryconnect(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"},
                weight={"kind": "binary", "mode": "stochastic" if o["stochastic"] else "det", "H": o["H"]},
                act={"kind": "uniform", "bits": o["act_bits"]})


def _binaryconnect_extras(model, ds, o):
    return {"real_weight_test_accuracy": real_weight_accuracy(model, ds)}


def _qnn(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight={"kind": "int", "bits": o["weight_bits"]},
                act={"kind": "uniform", "bits": o["act_bits"]})


def _qnn_log(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight={"kind": "pow2", "bits": o["weight_bits"]},
                act={"kind": "uniform", "bits": o["act_bits"]})


def _bnn_plus(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "binary"},
                weight={"kind": "binary", "mode": "swish", "scale": "alpha", "beta": o["beta"],
                        "reg_kind": o["regularizer"], "reg": o["reg"]},
                act={"kind": "sign", "mode": "swish", "beta": o["beta"]})


def _fewmult(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"},
                weight={"kind": "ternary", "W0": o["W0"], "stochastic": o["stochastic"]},
                act={"kind": "uniform", "bits": o["act_bits"]}, quantized_backprop=o["quantized_backprop"])


def _dfp(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight={"kind": "fixed", "bits": o["bits"]},
                act={"kind": "fixed", "bits": o["bits"], "gradient_bits": o["gradient_bits"]}, norm="none",
                bias=True)


def _hwgq(ds, hidden, o, conv=None):
    return _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight={"kind": "binary", "mode": "ste", "scale": "mean"},
                act={"kind": "hwgq", "bits": o["act_bits"], "backward": o["backward"]}, norm="plain")


def _lutnet(ds, hidden, o, conv=None, **kwargs):
    return _mlp(ds, hidden, conv=conv, input={"kind": "levels", "bits": o["input_bits"]},
                weight={"kind": "codebook", "clusters": o["clusters"], "product_bits": o["product_bits"]},
                act={"kind": "levels", "fn": o["fn"], "bits": o["act_bits"]}, norm="none", bias=True, **kwargs)


def _lutnet_autoencoder(ds, hidden, o):
    return _lutnet(ds, hidden, o, outputs=ds.input_size, task="regress")


def _shift_attention_options(o):
    """Shift Attention's options, checked (one-line HwnetError)."""
    for key in ("tau0", "tau_final"):
        if not math.isfinite(o[key]) or o[key] <= 0:
            raise HwnetError(f"method 'shift-attention' option {key!r} must be a positive number, got {o[key]!r}")
    for key, lo, hi in (("hard_epochs", 0, 1 << 20), ("act_bits", 1, 8)):
        if isinstance(o[key], float) or not lo <= o[key] <= hi:
            raise HwnetError(f"method 'shift-attention' option {key!r} must be an integer from {lo} to {hi}, got "
                             f"{o[key]!r}")
    return o


def _shift_attention(ds, hidden, o, conv=None):
    """Shift Attention Layers: every convolution with a kernel larger than 1x1 gets the shift-attention weights
    (binary weights times a per-kernel attention over the positions; one position per kernel at inference, a
    ternary layer); 1x1 convolutions and dense layers get BinaryNet's binary weights. The raw multi-bit pixels go
    into the first convolution; batch norm, then sign activations (``act_bits=1``) or uniform k-bit ones."""
    _shift_attention_options(o)
    specs = [conv_spec(c, f"conv layer {i + 1}") for i, c in enumerate(conv or [])]
    if not any(spec["kernel"] != [1, 1] for spec in specs):
        raise HwnetError("method 'shift-attention' needs a convolution with a kernel larger than 1x1 (its attention "
                         "chooses one position of each kernel); use e.g. --conv 16c3p1,16c3p1,mp2")
    binary = {"kind": "binary", "mode": "ste"}
    shift = {"kind": "shift-attention", "tau": o["tau0"]}
    weight = [dict(shift if spec["kernel"] != [1, 1] else binary) for spec in specs]
    weight += [dict(binary) for _ in tuple(hidden)]
    act = {"kind": "sign", "mode": "ste"} if o["act_bits"] == 1 else {"kind": "uniform", "bits": o["act_bits"]}
    model = _mlp(ds, hidden, conv=conv, input={"kind": "raw"}, weight=weight, act=act, final_weight=dict(binary))
    with torch.no_grad():  # as BinaryNet's CNN: logits of order one at the start
        model.log_scale.fill_(-0.5 * math.log(model.final.in_features))
    return model


def _shift_attention_layers(model):
    return [m for m in model.modules() if isinstance(m, ShiftAttentionWeights)]


def _anneal(model, epoch, epochs, options):
    """Set every shift-attention layer's temperature for the next epoch (:meth:`ShiftAttentionWeights.temperature`:
    geometric from ``tau0`` to ``tau_final``, then ``hard_epochs`` at the hard one-hot attention)."""
    tau = ShiftAttentionWeights.temperature(epoch + 1, epochs, tau0=options["tau0"], tau_final=options["tau_final"],
                                            hard_epochs=options["hard_epochs"])
    for q in _shift_attention_layers(model):
        q.tau.fill_(tau)


def _shift_attention_finish(model, dataset, options, refit):
    """Without hard epochs the batch norms last saw the soft attention: re-estimate them for the hard one."""
    if any(float(q.tau) > 0 for q in _shift_attention_layers(model)):
        reestimate_batchnorm(model, dataset.train_x)
    return model


def _shift_attention_extras(model, dataset, options):
    """Per shift-attention layer, how many kernels kept each position (``ky * KW + kx``)."""
    return {"kept_positions": [np.bincount(q.kept().numpy().ravel(), minlength=q.positions).tolist()
                               for q in _shift_attention_layers(model)]}


_LUT_OPTIONS = {"clusters": 16, "product_bits": 8, "fn": "tanh", "act_bits": 3, "input_bits": 3}

#: Every method, by ``--method`` name.
METHODS = {m.name: m for m in (
    Method("binarynet", "Courbariaux, Hubara et al. 2016, Binarized Neural Networks", {}, _binarynet),
    Method("binaryconnect", "Courbariaux, Bengio, David 2015, BinaryConnect",
           {"stochastic": True, "H": 1.0, "act_bits": 2}, _binaryconnect, finish=_finish_stochastic,
           extras=_binaryconnect_extras, lr_scale=3.0),
    Method("qnn", "Hubara et al. 2017, Quantized Neural Networks (linear quantization)",
           {"weight_bits": 2, "act_bits": 2}, _qnn),
    Method("qnn-log", "Hubara et al. 2017, Quantized Neural Networks (logarithmic weights)",
           {"weight_bits": 3, "act_bits": 2}, _qnn_log),
    Method("bnn+", "Darabi et al. 2018, BNN+", {"beta": 5.0, "regularizer": "l1", "reg": 1e-3}, _bnn_plus),
    Method("fewmult", "Lin et al. 2016, Neural Networks with Few Multiplications",
           {"W0": 0.25, "stochastic": True, "act_bits": 2, "quantized_backprop": True}, _fewmult,
           finish=_finish_stochastic),
    Method("dfp", "Courbariaux, Bengio, David 2014, Training deep neural networks with low precision "
           "multiplications (dynamic fixed point)", {"bits": 8, "gradient_bits": 16}, _dfp),
    Method("hwgq", "Cai et al. 2017, Deep Learning with Low Precision by Half-wave Gaussian Quantization",
           {"act_bits": 2, "backward": "clipped"}, _hwgq),
    Method("lutnet", "Baluja et al. 2018, No Multiplication? No Floating Point? No Problem!",
           dict(_LUT_OPTIONS), _lutnet, after_epoch=_cluster),
    Method("ffn", "Wang and Cheng 2017, Fixed-Point Factorized Networks",
           {"rank": 1.0, "pot_bits": 4, "act_bits": 2, "finetune": 0.5}, _ffn_base, finish=_ffn_finish,
           extras=_ffn_extras, conv_refusal="its semidiscrete decomposition factorizes dense weight matrices"),
    Method("bitpruning", "Nikolic et al. 2020, BitPruning: Learning Bitlengths for Aggressive and Accurate "
           "Quantization", {"init_bits": 8, "cost": "bits", "reg": 0.05, "finetune": 0.25}, _bitpruning,
           finish=_bitpruning_finish, extras=_bitpruning_extras),
    Method("lutnet-ae", "Baluja et al. 2018, No Multiplication? No Floating Point? No Problem! (autoencoder)",
           dict(_LUT_OPTIONS), _lutnet_autoencoder, after_epoch=_cluster, task="regress",
           conv_refusal="it is a dense autoencoder (input -> hidden -> input)"),
    Method("shift-attention", "Hacene, Lassance, Gripon, Courbariaux, Bengio 2019, Attention Based Pruning for "
           "Shift Networks (Shift Attention Layers)",
           {"tau0": 0.05, "tau_final": 0.0143, "hard_epochs": 2, "act_bits": 1}, _shift_attention,
           after_epoch=_anneal, finish=_shift_attention_finish, extras=_shift_attention_extras,
           needs_conv="its attention prunes each convolution kernel to one position"),
)}


def resolve_options(method, given):
    """The method's options with ``given`` (a dict) over its defaults, checked: one-line HwnetError for an
    unknown option or a value of the wrong kind."""
    options = dict(method.options)
    for key, value in (given or {}).items():
        if key not in options:
            known = ", ".join(options) or "none"
            raise HwnetError(f"method {method.name!r} has no option {key!r} (its options: {known})")
        default = options[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise HwnetError(f"method {method.name!r} option {key!r} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise HwnetError(f"method {method.name!r} option {key!r} must be a number, got {value!r}")
            value = type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
        if isinstance(default, str) and not isinstance(value, str):
            raise HwnetError(f"method {method.name!r} option {key!r} must be a string, got {value!r}")
        options[key] = value
    return options


def check_conv(method, conv):
    """Refuse (one-line HwnetError) convolutional layers ``conv`` for a :class:`Method` that cannot take them, and
    their absence for one that needs them."""
    if conv and method.conv_refusal is not None:
        raise HwnetError(f"method {method.name!r} cannot have convolutional layers ({method.conv_refusal}); "
                         f"leave out the conv layers (--conv), or choose another method")
    if not conv and method.needs_conv is not None:
        raise HwnetError(f"method {method.name!r} needs convolutional layers ({method.needs_conv}); add them with "
                         f"--conv, e.g. --conv 16c3p1,16c3p1,mp2 (in Python train(..., conv=[...]))")


def train(dataset, method="binarynet", *, hidden=None, conv=None, epochs=None, batch_size=None, lr=None,
          input_noise=None, seed=0, progress=None, options=None):
    """Train ``method`` on ``dataset``.

    Settings left at None take the data set's entry in :data:`hwnet.train.trainer.DEFAULTS`; ``options`` (a
    dict) overrides the method's own options (:attr:`Method.options`). ``conv`` (a list of conv layer dicts,
    :class:`~hwnet.train.qnet.QuantNet`) puts convolutional layers on the data set's image
    (:attr:`~hwnet.train.data.Dataset.image_shape`) in front of the ``hidden`` dense layers. Returns
    ``(model, history, extras)``: the model in eval mode, the per-epoch history and a dict of extra results.
    """
    if method not in METHODS:
        raise HwnetError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    m = METHODS[method]
    opts = resolve_options(m, options)
    check_conv(m, conv)
    d = _defaults(dataset)
    hidden = d["hidden"] if hidden is None else hidden
    settings = {"epochs": d["epochs"] if epochs is None else epochs,
                "batch_size": d["batch_size"] if batch_size is None else batch_size,
                "lr": d["lr"] * m.lr_scale if lr is None else lr,
                "input_noise": d.get("input_noise", 0.0) if input_noise is None else input_noise}
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HwnetError(f"seed must be an integer >= 0, got {seed!r}")
    torch.manual_seed(int(seed))
    model = m.build(dataset, hidden, opts, conv=conv) if conv else m.build(dataset, hidden, opts)
    after = None
    if m.after_epoch is not None:
        epochs_total = settings["epochs"]
        after = lambda model_, epoch: m.after_epoch(model_, epoch, epochs_total, opts)  # noqa: E731
    history = fit(model, dataset, seed=seed, progress=progress, after_epoch=after, **settings)
    if m.finish is not None:
        def refit(model_, epochs):
            return history.extend(fit(model_, dataset, seed=seed, progress=progress,
                                      label="fine-tune ", **{**settings, "epochs": epochs}))
        refit.epochs = settings["epochs"]
        model = m.finish(model, dataset, opts, refit)
    extras = _final_results(model, dataset)
    if m.extras is not None:
        extras.update(m.extras(model, dataset, opts))
    return model, history, extras


def _final_results(model, dataset):
    """The returned model's test result (after any finishing step, so it may differ from the last epoch's)."""
    if getattr(model, "task", "classify") == "regress":
        return {"test_mse": reconstruction_error(model, dataset.test_x)}
    return {"test_accuracy": evaluate(model, dataset.test_x, dataset.test_y)}
