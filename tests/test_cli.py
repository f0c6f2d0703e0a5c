"""The command-line tool: the docs' hand-written example end to end, and bad input refused cleanly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hwnet import compiler, ir
from hwnet.cli import main


def _hand_ir(path, *, pe0=1, w0=None):
    # docs/ir.md's example, written exactly as the docs tell a user to.
    w0 = np.array([[1, -1, 1, 1], [-1, -1, 1, -1]]) if w0 is None else w0
    header = {"format": "hwnet-ir", "version": 1, "name": "hand", "input": {"type": "bipolar", "size": 4},
              "layers": [
                  {"op": "dense", "name": "fc0", "weight_type": "bipolar", "weights": "w0", "thresholds": "t0",
                   "out_type": "bipolar", "pe": pe0, "simd": 2},
                  {"op": "dense", "name": "fc1", "weight_type": "bipolar", "weights": "w1", "thresholds": None,
                   "pe": 3, "simd": 1}]}
    np.savez(path, __hwnet_ir__=json.dumps(header), w0=w0, t0=np.array([[0], [2]])[:len(w0)],
             w1=np.array([[1, 1], [1, -1], [-1, 1]]))
    return path


def _fails(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("hwnet: error: ") and "\n" not in err, err
    assert match in err, err
    return err


@pytest.mark.rtl
def test_docs_example_compile_and_simulate(tmp_path, capsys):
    model = _hand_ir(tmp_path / "hand.npz")
    assert main(["compile", str(model), "--out", str(tmp_path / "d")]) == 0
    assert {p.name for p in (tmp_path / "d").iterdir()} == {"network.npz", "hwnet_top.v", "design.json",
                                                            "design.md"}
    np.save(tmp_path / "x.npy", np.array([[1, 1, 1, 1], [-1, 1, -1, 1]]))
    assert main(["simulate", str(tmp_path / "d"), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy"), "--stall-in", "0.3", "--stall-out", "0.3"]) == 0
    # Worked by hand in docs/ir.md.
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), [[0, 2, -2], [-2, 0, 0]])
    assert "mismatches against the golden model: 0 elements" in capsys.readouterr().out


def test_compile_writes_summary_without_simulating(tmp_path, capsys):
    model = _hand_ir(tmp_path / "hand.npz")
    assert main(["compile", str(model), "--out", str(tmp_path / "d")]) == 0
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    assert summary["cycles_per_inference"] == max(2 * 2, 1 * 2)
    assert [s["pe"] for s in summary["stages"]] == [1, 3]
    assert "module hwnet_top" in (tmp_path / "d" / "hwnet_top.v").read_text()
    assert "cycles per inference" in capsys.readouterr().out


def test_compile_certifies_multiplier_free(tmp_path, capsys):
    model = _hand_ir(tmp_path / "hand.npz")
    assert main(["compile", str(model), "--out", str(tmp_path / "d")]) == 0
    assert "synthesizing for ice40 (yosys synth_ice40)..." in capsys.readouterr().out
    synthesis = json.loads((tmp_path / "d" / "design.json").read_text())["synthesis"]
    assert set(synthesis) == {"ice40", "ecp5"}
    for family, r in synthesis.items():
        assert r["multipliers"] == r["general_multipliers"] == r["dsp"] == 0 and r["multiplier_free"] is True
        assert r["luts"] > 0 and r["ffs"] > 0 and r["script"] == f"synth_{family} -top hwnet_top"
    assert "0 multipliers on iCE40 and ECP5" in (tmp_path / "d" / "design.md").read_text()

    assert main(["compile", str(model), "--out", str(tmp_path / "n"), "--no-synth"]) == 0
    assert "synthesizing" not in capsys.readouterr().out
    assert "synthesis" not in json.loads((tmp_path / "n" / "design.json").read_text())
    assert "Multiplier-free" not in (tmp_path / "n" / "design.md").read_text()


def test_compile_reports_a_multiplier_loudly(tmp_path, capsys, monkeypatch):
    # hwnet's gateware never multiplies; fake a synthesis that found one.
    import dataclasses

    from hwnet import synth
    real = synth.synthesize
    monkeypatch.setattr(synth, "synthesize", lambda verilog, *, top, family: dataclasses.replace(
        real(verilog, top=top, family=family), general_multipliers=1))
    model = _hand_ir(tmp_path / "hand.npz")
    assert main(["compile", str(model), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("hwnet: warning: the design is NOT multiplier-free on ice40 and ecp5") and "bug" in err
    assert json.loads((tmp_path / "d" / "design.json").read_text())["synthesis"]["ecp5"]["multipliers"] == 1
    assert "**WARNING: NOT multiplier-free.**" in (tmp_path / "d" / "design.md").read_text()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    _fails(capsys, ["compile", str(tmp_path / "missing.npz"), "--out", str(out)], "no such file")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage, not a checkpoint")
    _fails(capsys, ["compile", str(tmp_path / "bad.pt"), "--out", str(out)], "bad.pt")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04truncated")
    _fails(capsys, ["compile", str(tmp_path / "trunc.npz"), "--out", str(out)], "not a readable hwnet IR")
    _fails(capsys, ["compile", str(_hand_ir(tmp_path / "pe.npz", pe0=3)), "--out", str(out)],
           "pe=3 does not divide out_features=2")
    _fails(capsys, ["compile", str(_hand_ir(tmp_path / "zero.npz", w0=np.zeros((0, 4), int))),
                    "--out", str(out)], "zero-width layer")
    (tmp_path / "model.h5").write_bytes(b"")
    _fails(capsys, ["compile", str(tmp_path / "model.h5"), "--out", str(out)], "unknown model file type")
    (tmp_path / "model.onnx").write_bytes(b"")
    _fails(capsys, ["compile", str(tmp_path / "model.onnx"), "--out", str(out)], "holds no ONNX graph")
    _fails(capsys, ["train", "--method", "xnor-magic", "--out", str(tmp_path / "m.pt")], "unknown method")
    _fails(capsys, ["train", "--method", "hwgq", "--option", "bogus=1", "--out", str(tmp_path / "m.pt")],
           "method 'hwgq' has no option 'bogus' (its options: act_bits, backward)")
    _fails(capsys, ["train", "--method", "hwgq", "--option", "act_bits", "--out", str(tmp_path / "m.pt")],
           "--option must be KEY=VALUE")
    _fails(capsys, ["train", "--method", "binaryconnect", "--option", "stochastic=maybe", "--out",
                    str(tmp_path / "m.pt")], "must be true or false")
    _fails(capsys, ["train", "--hidden", "64,x", "--out", str(tmp_path / "m.pt")], "--hidden")
    _fails(capsys, ["train", "--epochs", "0", "--out", str(tmp_path / "m.pt")], "epochs")
    _fails(capsys, ["train", "--out", str(tmp_path / "nodir" / "m.pt")], "does not exist")
    _fails(capsys, ["train", "--dataset", "mnist", "--mnist-dir", str(tmp_path), "--out",
                    str(tmp_path / "m.pt")], str(tmp_path))
    assert not out.exists() and not (tmp_path / "m.pt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


def test_existing_output_needs_force(tmp_path, capsys):
    model = _hand_ir(tmp_path / "hand.npz")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    _fails(capsys, ["compile", str(model), "--out", str(tmp_path / "d")], "--force")
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"
    assert main(["compile", str(model), "--out", str(tmp_path / "d"), "--force"]) == 0
    assert not (tmp_path / "d" / "keep.txt").exists()


def test_simulate_bad_input(tmp_path, capsys):
    model = _hand_ir(tmp_path / "hand.npz")
    assert main(["compile", str(model), "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    _fails(capsys, ["simulate", str(tmp_path / "nope"), "--inputs", "x.npy"], "not a design directory")
    np.save(tmp_path / "wide.npy", np.ones((2, 5), int))
    _fails(capsys, ["simulate", str(tmp_path / "d"), "--inputs", str(tmp_path / "wide.npy")], "shape (n, 4)")
    np.save(tmp_path / "zero.npy", np.zeros((2, 4), int))
    _fails(capsys, ["simulate", str(tmp_path / "d"), "--inputs", str(tmp_path / "zero.npy")], "not legal bipolar")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    _fails(capsys, ["simulate", str(tmp_path / "d"), "--inputs", str(tmp_path / "junk.npy")], "not a readable")
    np.save(tmp_path / "x.npy", np.ones((1, 4), int))
    _fails(capsys, ["simulate", str(tmp_path / "d"), "--inputs", str(tmp_path / "x.npy"), "--stall-in", "1.5"],
           "stall_in")
    (tmp_path / "d" / "design.json").unlink()
    _fails(capsys, ["simulate", str(tmp_path / "d"), "--inputs", str(tmp_path / "x.npy")], "missing design.json")


def test_console_entry_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "hwnet", "compile", str(tmp_path / "none.npz"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().startswith("hwnet: error:")
    res = subprocess.run([sys.executable, "-m", "hwnet", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "simulate" in res.stdout


def test_compile_puts_named_layers_weights_in_logic(tmp_path, capsys):
    model = _hand_ir(tmp_path / "hand.npz")
    out = tmp_path / "d"
    assert main(["compile", str(model), "--out", str(out), "--no-synth", "--weights-in-logic", "fc1"]) == 0
    summary = json.loads((out / "design.json").read_text())
    fc0, fc1 = summary["stages"]
    assert fc1["weights"] == "logic" and (fc1["pe"], fc1["simd"], fc1["cycles"]) == (3, 2, 1)
    assert fc0["weights"] != "logic" and (fc0["pe"], fc0["simd"]) == (1, 2)
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1, 1, 1, 1], [-1, 1, -1, 1]]))
    assert main(["simulate", str(out), "--inputs", str(x), "--outputs", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy")[0], [0, 2, -2])  # docs/ir.md's worked example
    _fails(capsys, ["compile", str(model), "--out", str(tmp_path / "e"), "--weights-in-logic", "fc9"],
           "no dense layer named 'fc9'; the dense layers are fc0, fc1")
    _fails(capsys, ["compile", str(model), "--out", str(tmp_path / "e"), "--bit-serial", "fc0"],
           "bit-serial evaluation is for uint<k>/int<k> weights")


def test_train_another_method_with_options_then_compile(tmp_path, capsys):
    from hwnet import ir
    out = tmp_path / "q.pt"
    assert main(["train", "--method", "qnn", "--option", "weight_bits=3", "--option", "act_bits=3", "--hidden",
                 "16", "--epochs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training qnn on digits" in text and "options {'weight_bits': 3, 'act_bits': 3}" in text
    assert "test accuracy" in text
    assert main(["compile", str(out), "--out", str(tmp_path / "d"), "--no-synth"]) == 0
    net = ir.load(tmp_path / "d" / "network.npz")
    assert [str(layer.weight_type) for layer in net.dense_layers()] == ["int3", "int3"]
    assert net.metadata["method"] == "qnn" and net.metadata["options"] == {"weight_bits": 3, "act_bits": 3}


def test_train_help_lists_every_method(capsys):
    from hwnet.train.methods import METHODS
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in METHODS:
        assert name in text


def test_train_conv_writes_a_cnn_checkpoint(tmp_path, capsys):
    from hwnet.train.data import load_dataset
    from hwnet.train.lower import check_lowering, lower
    from hwnet.train.trainer import load_checkpoint
    out = tmp_path / "cnn.pt"
    assert main(["train", "--method", "qnn", "--conv", "4c3p1,mp2,6c2s2", "--hidden", "8", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert "training qnn on digits: 1437 train / 360 test samples, conv 4c3p1,mp2,6c2s2, hidden [8]" in \
        capsys.readouterr().out
    model, meta = load_checkpoint(out)
    assert meta["method"] == "qnn"
    assert model.config()["conv"] == [
        {"channels": 4, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1], "pool": [2, 2]},
        {"channels": 6, "kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0], "pool": None}]
    net = lower(model, name="cnn")
    assert [layer.name for layer in net.layers] == ["conv1", "pool1", "conv2", "fc1", "fc2"]
    assert net.layers[2].out_shape == (2, 2, 6)
    assert check_lowering(model, net, load_dataset("digits").test_x) == 0


@pytest.mark.parametrize("spec, match", [
    ("16x3", "--conv must be comma-separated items <OC>c<K>[s<S>][p<P>] or mp<K>"),
    ("", "--conv must be comma-separated items"),
    ("8c3,", "--conv must be comma-separated items"),
    ("mp2,8c3", "--conv: 'mp2' must follow a conv item"),
    ("8c3,mp2,mp2", "at most one max-pool per conv"),
    ("8c0", "channels, kernel, stride and pool must be at least 1"),
    ("8c3s0", "channels, kernel, stride and pool must be at least 1"),
    ("8c9", "conv layer 1: a 9x9 kernel with stride [1, 1] does not fit the 8x8 input"),
    ("8c3,mp8", "conv layer 1: the 8x8 max-pool does not fit the layer's 6x6 output"),
])
def test_train_bad_conv_specs_are_refused(tmp_path, capsys, spec, match):
    out = tmp_path / "m.pt"
    _fails(capsys, ["train", "--conv", spec, "--epochs", "1", "--out", str(out)], match)
    assert not out.exists()


def test_train_conv_refused_for_dense_only_methods(tmp_path, capsys):
    for method in ("ffn", "lutnet-ae"):
        _fails(capsys, ["train", "--method", method, "--conv", "8c3", "--out", str(tmp_path / "m.pt")],
               f"method '{method}' cannot have convolutional layers")
    assert not (tmp_path / "m.pt").exists()


def test_compile_for_a_board_auto_folds_and_reports(tmp_path, capsys):
    rng = np.random.default_rng(2)
    net = ir.Network(input_type="uint8", input_size=64, name="boarded", layers=[
        ir.MultiThreshold(thresholds=[[100]], out_type="bipolar", name="bin"),
        ir.Dense(weights=rng.choice([-1, 1], size=(32, 64)), thresholds=rng.integers(-4, 5, size=(32, 1)),
                 out_type="bipolar", name="fc1"),
        ir.Dense(weights=rng.choice([-1, 1], size=(10, 32)), name="fc2")])
    ir.save(net, tmp_path / "net.npz")
    assert main(["compile", str(tmp_path / "net.npz"), "--out", str(tmp_path / "d"), "--board", "up5k",
                 "--no-synth"]) == 0
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    assert summary["autofold"]["budget"].startswith("iCE40UP5K")
    assert any(line.startswith("limited by: ") for line in summary["autofold"]["report"])
    assert "## Auto-folding" in (tmp_path / "d" / "design.md").read_text()
    # a budget nothing fits: one line, nothing written
    code = main(["compile", str(tmp_path / "net.npz"), "--out", str(tmp_path / "e"), "--budget", "lut4=20,ebr=0",
                 "--no-synth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("hwnet: error: nothing fits budget (ice40: 20 LUT4")
    assert not (tmp_path / "e").exists()


def test_compile_streams_named_layers_from_spram(tmp_path, capsys):
    rng = np.random.default_rng(3)
    net = ir.Network(input_type="bipolar", input_size=32, name="spram", layers=[
        ir.Dense(weights=rng.choice([-1, 1], size=(16, 32)), thresholds=rng.integers(-3, 4, size=(16, 1)),
                 out_type="bipolar", pe=2, simd=16, name="fc1"),
        ir.Dense(weights=rng.choice([-1, 1], size=(4, 16)), pe=1, simd=16, name="fc2")])
    ir.save(net, tmp_path / "net.npz")
    assert main(["compile", str(tmp_path / "net.npz"), "--out", str(tmp_path / "d"), "--spram", "fc1",
                 "--no-synth"]) == 0
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    assert summary["spram_words"] == 16 and summary["stages"][0]["weights"].startswith("SPRAM words 0..15")
    image = (tmp_path / "d" / "spram.hex").read_text().split()
    assert [int(w, 16) for w in image] == compiler.plan(ir.load(tmp_path / "d" / "network.npz")).spram_image()
    # LAYER:N streams N of the layer's PEs (its other PEs keep their ROMs)
    assert main(["compile", str(tmp_path / "net.npz"), "--out", str(tmp_path / "e"), "--spram", "fc1:1, fc2",
                 "--no-synth"]) == 0
    back = ir.load(tmp_path / "e" / "network.npz")
    assert [(l.weight_storage, l.spram_pes) for l in back.layers] == [("spram", 1), ("spram", None)]
    rows = json.loads((tmp_path / "e" / "design.json").read_text())["stages"]
    assert rows[0]["weights"] == "SPRAM words 0..15 x 16 bits (PEs 0..0), ROMs 1 x 16 words x 16 bits (PEs 1..1)"
    assert "(PEs 0..0), ROMs" in (tmp_path / "e" / "design.md").read_text()
    for bad, match in [("fc1:x", "--spram items must be LAYER or LAYER:PES (how many of its PEs stream, e.g. "
                                 "fc0,fc1:4), got 'fc1:x'"),
                       (":2", "got ':2'"),
                       ("fc1:3", "layer 'fc1': spram_pes must be a whole number of PEs from 1 to 2 (pe=2), got 3")]:
        _fails(capsys, ["compile", str(tmp_path / "net.npz"), "--out", str(tmp_path / "f"), "--spram", bad,
                        "--no-synth"], match)
    assert not (tmp_path / "f").exists()


def test_compile_and_simulate_a_cnn(tmp_path, capsys):
    from hwnet.gateware.testing import random_cnn
    rng = np.random.default_rng(4400)
    net = random_cnn(rng)
    ir.save(net, tmp_path / "cnn.npz")
    assert main(["compile", str(tmp_path / "cnn.npz"), "--out", str(tmp_path / "d"), "--no-synth"]) == 0
    text = (tmp_path / "d" / "design.md").read_text()
    assert "| conv0_window | sliding window " in text and "| conv0 | dense (" in text
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    assert [s["kind"] for s in summary["stages"]][:2] == ["window", "dense"]
