import pickle

import numpy as np
import pytest
import torch

from hwnet.errors import HwnetError
from hwnet.train.binarynet import BinarizedMLP, BinaryLinear
from hwnet.train.data import Dataset
from hwnet.train.trainer import DEFAULTS, evaluate, load_checkpoint, predict, save_checkpoint, train_binarynet


@pytest.fixture(scope="module")
def small_run(digits):
    return train_binarynet(digits, hidden=(32,), epochs=2, batch_size=128, seed=3)


def _tiny_dataset():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, size=(50, 6))
    y = (x[:, 0] > 7).astype(np.int64)
    return Dataset(name="tiny", train_x=x[:40], train_y=y[:40], test_x=x[40:], test_y=y[40:],
                   input_type="uint4", input_max=15)


def test_training_is_deterministic(digits):
    a, ha = train_binarynet(digits, hidden=(32,), epochs=2, batch_size=128, seed=11)
    b, hb = train_binarynet(digits, hidden=(32,), epochs=2, batch_size=128, seed=11)
    c, _ = train_binarynet(digits, hidden=(32,), epochs=2, batch_size=128, seed=12)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in ha] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in hb]
    assert not torch.equal(a.final.weight, c.final.weight)


def test_history_progress_and_result(digits):
    messages = []
    model, history = train_binarynet(digits, hidden=(48, 48), epochs=3, seed=0, progress=messages.append)
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    assert messages[0].startswith("epoch 1/3: loss ") and "train " in messages[0] and "test " in messages[0]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "train_accuracy", "test_accuracy", "seconds"}
    assert not model.training
    assert model.hidden == (48, 48) and model.input_size == 64 and model.classes == 10 and model.input_max == 16
    assert history[-1]["test_accuracy"] == evaluate(model, digits.test_x, digits.test_y)
    # independent accuracy: argmax of the logits counted by hand
    with torch.no_grad():
        pred = model(torch.from_numpy(digits.test_x)).argmax(1).numpy()
    assert history[-1]["test_accuracy"] == float(np.mean(pred == digits.test_y))
    np.testing.assert_array_equal(predict(model, digits.test_x), pred)
    assert history[-1]["test_accuracy"] > 0.5
    for m in model.modules():
        if isinstance(m, BinaryLinear):
            assert float(m.weight.detach().abs().max()) <= 1.0


def test_weights_clipped_after_every_step(monkeypatch):
    ds = _tiny_dataset()
    calls = {"clip": 0, "step": 0}
    original_clip = BinarizedMLP.clip_weights
    original_step = torch.optim.Adam.step

    def clip(self):
        calls["clip"] += 1
        return original_clip(self)

    def step(self, *args, **kwargs):
        assert calls["clip"] == calls["step"]  # the previous step was followed by a clip
        calls["step"] += 1
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(BinarizedMLP, "clip_weights", clip)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    train_binarynet(ds, hidden=(4,), epochs=3, batch_size=16, lr=0.5, seed=0)
    assert calls["step"] == 3 * 3  # 40 samples in batches of 16: 16, 16, 8
    assert calls["clip"] == calls["step"]


def test_training_argument_errors(digits):
    for kwargs, message in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch size"),
                            ({"lr": -1.0}, "learning rate"), ({"lr": float("nan")}, "learning rate"),
                            ({"seed": -1}, "seed"), ({"input_noise": 2.0}, "input noise"),
                            ({"hidden": (0,)}, "hidden size")]:
        with pytest.raises(HwnetError, match=message):
            train_binarynet(digits, **{"epochs": 1, **kwargs})


def test_defaults_are_complete():
    for name, d in DEFAULTS.items():
        assert set(d) == {"hidden", "epochs", "batch_size", "lr", "input_noise"}, name
    assert DEFAULTS["mnist"]["hidden"] == (64, 64, 64)


def test_evaluate_errors(small_run, digits):
    model, _ = small_run
    with pytest.raises(HwnetError, match="empty"):
        evaluate(model, digits.test_x[:0], digits.test_y[:0])
    with pytest.raises(HwnetError, match="3 inputs but 2 labels"):
        evaluate(model, digits.test_x[:3], digits.test_y[:2])


# --- checkpoints ---------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(small_run, digits, tmp_path):
    model, history = small_run
    path = tmp_path / "model.pt"
    meta = {"dataset": "digits", "test_accuracy": history[-1]["test_accuracy"], "hidden": [32], "note": None}
    save_checkpoint(model, path, meta=meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left behind
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    assert not loaded.training and loaded.config() == model.config()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    for a, b in zip(model.integer_trace(digits.test_x), loaded.integer_trace(digits.test_x)):
        np.testing.assert_array_equal(a, b)
    # the file holds plain values only: loading with weights_only=True works directly
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "hwnet-binarynet" and raw["config"]["hidden"] == [32]


def test_checkpoint_save_errors(small_run, tmp_path):
    model, _ = small_run
    with pytest.raises(HwnetError, match="only str, int, float"):
        save_checkpoint(model, tmp_path / "m.pt", meta={"x": object()})
    with pytest.raises(HwnetError, match="cannot write checkpoint"):
        save_checkpoint(model, tmp_path / "no" / "such" / "dir" / "m.pt")
    with pytest.raises(HwnetError, match="can only save a BinarizedMLP"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m.pt")


def _one_line_error(path, match):
    with pytest.raises(HwnetError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_checkpoint_missing(tmp_path):
    _one_line_error(tmp_path / "absent.pt", "no such checkpoint file")
    _one_line_error(tmp_path, "no such checkpoint file")  # a folder


def test_checkpoint_not_torch(tmp_path):
    for i, data in enumerate([b"", b"hello world\n" * 10, bytes(range(256)) * 4]):
        path = tmp_path / f"junk{i}.pt"
        path.write_bytes(data)
        _one_line_error(path, "not a readable hwnet checkpoint")


def test_checkpoint_truncated(small_run, tmp_path):
    model, _ = small_run
    good = tmp_path / "good.pt"
    save_checkpoint(model, good, meta={})
    data = good.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        _one_line_error(path, "not a readable hwnet checkpoint")


def test_checkpoint_unsafe_pickle_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "hwnet-binarynet", "x": Evil()}, path)
    _one_line_error(path, "refusing to load it: the file holds a print object")
    plain = tmp_path / "plain.pkl"
    with open(plain, "wb") as f:
        pickle.dump({"format": "hwnet-binarynet", "x": Evil()}, f, protocol=2)
    _one_line_error(plain, "not a readable hwnet checkpoint|refusing to load it")
    assert "this must never run" not in capsys.readouterr().out


def _payload(model):
    return {"format": "hwnet-binarynet", "version": 1, "config": model.config(),
            "state_dict": dict(model.state_dict()), "meta": {}}


@pytest.mark.parametrize("mutate, match", [
    (lambda p: p.update(format="other"), "not an hwnet checkpoint"),
    (lambda p: p.update(version=99), "version 99 is not supported"),
    (lambda p: p.pop("config"), "entry 'config' is missing"),
    (lambda p: p.pop("state_dict"), "entry 'state_dict' is missing"),
    (lambda p: p.update(meta=[1]), "entry 'meta' is missing or not a dict"),
    (lambda p: p["config"].pop("input_max"), "config lacks input_max"),
    (lambda p: p["config"].update(hidden=[32, 8]), "do not match its config"),
    (lambda p: p["config"].update(input_size=65), "shape"),
    (lambda p: p["config"].update(hidden=[0]), "hidden size"),
    (lambda p: p["state_dict"].pop("final.weight"), "missing \\['final.weight'\\]"),
    (lambda p: p["state_dict"].update({"final.weight": torch.zeros(3, 3)}), "'final.weight' has shape \\(3, 3\\)"),
    (lambda p: p["state_dict"].update({"final.weight": 1.0}), "'final.weight' has shape float"),
    (lambda p: p["state_dict"].update({"final.weight": torch.zeros(10, 32, dtype=torch.int64)}), "dtype"),
])
def test_checkpoint_bad_contents(small_run, tmp_path, mutate, match):
    model, _ = small_run
    payload = _payload(model)
    payload["config"] = dict(payload["config"])
    mutate(payload)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    _one_line_error(path, match)
    torch.save([1, 2, 3], path)
    _one_line_error(path, "not an hwnet checkpoint")
