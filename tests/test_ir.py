import json

import numpy as np
import pytest

from hwnet import golden, ir
from hwnet.errors import HwnetError


def _net(rng, pe=None, simd=None):
    return ir.Network(name="t", input_type="uint5", input_size=12, metadata={"k": [1, 2]}, layers=[
        ir.MultiThreshold(thresholds=[[8]], out_type="bipolar", name="bin"),
        ir.Dense(weights=rng.choice([-1, 1], size=(6, 12)), thresholds=rng.integers(-5, 5, size=(6, 1)),
                 out_type="bipolar", pe=pe, simd=simd, name="fc0"),
        ir.Dense(weights=rng.choice([-1, 1], size=(4, 6)), name="fc1")])


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    net = _net(rng, pe=3, simd=4)
    ir.save(net, tmp_path / "n.npz")
    back = ir.load(tmp_path / "n.npz")
    assert back.name == "t" and back.metadata == {"k": [1, 2]}
    assert [l.name for l in back.layers] == ["bin", "fc0", "fc1"]
    assert (back.layers[1].pe, back.layers[1].simd) == (3, 4)
    for a, b in zip(net.layers, back.layers):
        np.testing.assert_array_equal(a.thresholds if a.thresholds is not None else 0,
                                      b.thresholds if b.thresholds is not None else 0)
    x = rng.integers(0, 17, size=(20, 12))
    np.testing.assert_array_equal(golden.execute(net, x), golden.execute(back, x))
    assert ir.to_bytes(net) == ir.to_bytes(back)


def test_hand_written_file_like_docs(tmp_path):
    # The docs/ir.md recipe: numpy arrays plus a JSON header, saved with numpy.savez.
    w0 = np.array([[1, -1, 1, 1], [-1, -1, 1, -1]])
    w1 = np.array([[1, 1], [1, -1], [-1, 1]])
    header = {"format": "hwnet-ir", "version": 1, "name": "hand", "input": {"type": "bipolar", "size": 4},
              "layers": [
                  {"op": "dense", "name": "fc0", "weight_type": "bipolar", "weights": "w0",
                   "thresholds": "t0", "out_type": "bipolar", "pe": 1, "simd": 2},
                  {"op": "dense", "name": "fc1", "weight_type": "bipolar", "weights": "w1",
                   "thresholds": None, "pe": 3, "simd": 1}]}
    np.savez(tmp_path / "hand.npz", __hwnet_ir__=json.dumps(header), w0=w0, t0=np.array([[0], [2]]), w1=w1)
    net = ir.load(tmp_path / "hand.npz")
    out = golden.execute(net, [[1, 1, 1, 1]])
    # fc0: acc = [2, -2] -> [+1 (2 >= 0), -1 (-2 < 2)]; fc1 = w1 @ [1, -1] = [0, 2, -2]
    np.testing.assert_array_equal(out, [[0, 2, -2]])
    assert net.layers[1].acc_type.name == "int3"


def test_accumulator_width_from_worst_case():
    w = np.ones((2, 100), dtype=int)
    net = ir.Network(input_type="bipolar", input_size=100, layers=[ir.Dense(weights=w)])
    assert net.layers[0].acc_range() == (-100, 100)
    assert net.layers[0].acc_type.name == "int8"
    net = ir.Network(input_type="uint8", input_size=100, layers=[ir.Dense(weights=w * 7, weight_type="int4")])
    assert net.layers[0].acc_range() == (0, 100 * 7 * 255)


def test_hardware_choices_and_products_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    table = rng.integers(-9, 10, size=(4, 3))
    net = ir.Network(input_type="ternary", input_size=6, layers=[
        ir.Dense(weights=rng.integers(0, 4, size=(5, 6)), weight_type="uint2", products=table,
                 thresholds=np.sort(rng.integers(-20, 20, size=(5, 3)), axis=1), out_type="uint2", name="lut"),
        ir.Dense(weights=rng.integers(-4, 4, size=(4, 5)), weight_type="int3", bit_serial=True, name="serial",
                 thresholds=np.zeros((4, 1), int), out_type="bipolar"),
        ir.Dense(weights=rng.choice([-2, -1, 0, 1, 2], size=(3, 4)), weight_type="pot3", weight_storage="logic",
                 name="shift")])
    ir.save(net, tmp_path / "n.npz")
    back = ir.load(tmp_path / "n.npz")
    np.testing.assert_array_equal(back.layers[0].products, table)
    assert back.layers[1].bit_serial and back.layers[1].planes == 3 and not back.layers[0].bit_serial
    assert back.layers[2].weight_storage == "logic" and back.layers[0].weight_storage == "rom"
    assert ir.to_bytes(net) == ir.to_bytes(back)
    # the products table's accumulator range: per row, the sum of each lane's smallest / largest entry
    w = net.layers[0].weights
    assert net.layers[0].acc_range() == (int(table.min(axis=1)[w].sum(axis=1).min()),
                                         int(table.max(axis=1)[w].sum(axis=1).max()))


def test_spram_pes_round_trip_and_default(tmp_path):
    # some PEs of a layer stream from SPRAM (spram_pes); without the field, every PE does (files written before it)
    rng = np.random.default_rng(5)
    net = _net(rng, pe=3, simd=4)
    fc0, fc1 = net.layers[1], net.layers[2]
    net = net.replace_layers([net.layers[0], fc0.replace(weight_storage="spram", spram_pes=2),
                              fc1.replace(weight_storage="spram", pe=2, simd=3)])
    assert [l.streamed_pes for l in net.layers[1:]] == [2, 2] and net.layers[2].spram_pes is None
    assert "weights-in-spram(2 PEs)" in net.summary_lines()[2]
    ir.save(net, tmp_path / "n.npz")
    back = ir.load(tmp_path / "n.npz")
    assert [(l.weight_storage, l.spram_pes) for l in back.layers[1:]] == [("spram", 2), ("spram", None)]
    assert ir.to_bytes(net) == ir.to_bytes(back)
    header = back.header({})
    assert header["layers"][1]["spram_pes"] == 2 and "spram_pes" not in header["layers"][2]
    assert ir.Dense(weights=np.ones((2, 2), int)).streamed_pes == 0
    assert ir.Dense(weights=np.ones((2, 2), int), weight_storage="spram").streamed_pes is None  # pe unset
    with pytest.raises(HwnetError, match=r"^layer 'fc0': spram_pes must be a whole number of PEs from 1 to 1 "
                                         r"\(pe=1\), got 2$"):
        back.layers[1].with_folding(1, 4)


@pytest.mark.parametrize("make,match", [
    (lambda: ir.Dense(weights=np.ones((2, 2), int), spram_pes=1),
     r"^layer 'dense': spram_pes is for a layer whose weights stream from SPRAM \(weight_storage='spram'\), "
     r"not 'rom'$"),
    (lambda: ir.Dense(weights=np.ones((4, 2), int), pe=2, weight_storage="spram", spram_pes=3),
     r"^layer 'dense': spram_pes must be a whole number of PEs from 1 to 2 \(pe=2\), got 3$"),
    (lambda: ir.Dense(weights=np.ones((4, 2), int), weight_storage="spram", spram_pes=0),
     r"^layer 'dense': spram_pes must be a whole number of PEs from 1 to 4 \(out_features=4\), got 0$"),
    (lambda: ir.Dense(weights=np.ones((4, 2), int), weight_storage="spram", spram_pes=True), r"got True$"),
    (lambda: ir.Dense(weights=np.ones((4, 2), int), weight_storage="spram", spram_pes="2"), r"got '2'$"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), weight_storage="flash"), r"weight_storage must be 'rom', 'logic' or"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), weight_storage="logic", pe=1),
     r"weights in logic need the layer fully unrolled \(pe=2, simd=2\)"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), bit_serial=True), r"bit-serial evaluation is for uint<k>/int<k>"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), weight_type="int2", bit_serial=True, weight_storage="logic"),
     r"cannot keep its weights in logic"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), bit_serial=1), r"bit_serial must be true or false"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), products=np.zeros((0, 2), int)), r"products table is empty"),
    (lambda: ir.Network(input_type="uint2", input_size=2, layers=[
        ir.Dense(weights=np.ones((2, 2), int), products=np.zeros((2, 3), int))]),
     r"products table must have shape \(2, 4\) \(bipolar weight values x uint2 input values\), got \(2, 3\)"),
    (lambda: ir.Dense(weights=np.full((2, 2), 3), weight_type="pot3"), r"not legal pot3 values"),
    (lambda: ir.Dense(weights=np.ones((4, 6), int), pe=3), r"pe=3 does not divide out_features=4"),
    (lambda: ir.Dense(weights=np.ones((4, 6), int), simd=7), r"simd=7 is more than in_features=6; choose 1 to 6"),
    (lambda: ir.Conv2d(weights=np.ones((2, 3, 3, 1), int), in_shape=(4, 4, 1), simd=4),
     r"simd=4 does not divide kernel_h\*kernel_w\*in_channels=9"),
    (lambda: ir.Dense(weights=np.ones((4, 6), int), simd=0), r"simd must be a positive integer"),
    (lambda: ir.Dense(weights=np.ones((0, 6), int)), r"zero-width layer"),
    (lambda: ir.Dense(weights=np.ones((4, 0), int)), r"zero-width layer"),
    (lambda: ir.Dense(weights=np.zeros((2, 2), int)), r"not legal bipolar"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), thresholds=[[1], [2]]), r"needs an out_type"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), thresholds=[[1]], out_type="bipolar"), r"1 rows"),
    (lambda: ir.Dense(weights=np.ones((2, 2), int), thresholds=[[1, 2], [3, 4]], out_type="bipolar"),
     r"needs 1 threshold"),
    (lambda: ir.Dense(weights=np.ones((1, 2), int), thresholds=[[3, 1, 2]], out_type="uint2"),
     r"not ascending"),
    (lambda: ir.Dense(weights=np.ones((1, 2), int), thresholds=[[0.5]], out_type="bipolar"),
     r"must hold integers"),
    (lambda: ir.Network(input_type="bipolar", input_size=3, layers=[ir.Dense(weights=np.ones((1, 2), int))]),
     r"takes 2 inputs but the layer before it gives 3"),
    (lambda: ir.Network(input_type="bipolar", input_size=2, layers=[]), r"at least one layer"),
])
def test_bad_ir_is_one_clear_error(make, match):
    with pytest.raises(HwnetError, match=match) as exc:
        make()
    assert "\n" not in str(exc.value)


def test_load_errors(tmp_path):
    with pytest.raises(HwnetError, match="no such file"):
        ir.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(HwnetError, match="not a readable hwnet IR"):
        ir.load(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(HwnetError, match="holds a single array"):
        ir.load(tmp_path / "single.npz")
    np.savez(tmp_path / "nohdr.npz", w=np.ones(3))
    with pytest.raises(HwnetError, match="no '__hwnet_ir__' entry"):
        ir.load(tmp_path / "nohdr.npz")
    np.savez(tmp_path / "badjson.npz", __hwnet_ir__="{not json")
    with pytest.raises(HwnetError, match="not valid JSON"):
        ir.load(tmp_path / "badjson.npz")
    hdr = {"format": "hwnet-ir", "version": 1, "input": {"type": "bipolar", "size": 2},
           "layers": [{"op": "conv", "name": "c"}]}
    np.savez(tmp_path / "op.npz", __hwnet_ir__=json.dumps(hdr))
    with pytest.raises(HwnetError, match="unsupported op 'conv'"):
        ir.load(tmp_path / "op.npz")
    hdr["layers"] = [{"op": "dense", "name": "d", "weights": "w", "thresholds": None, "acc_type": "int2"}]
    np.savez(tmp_path / "acc.npz", __hwnet_ir__=json.dumps(hdr), w=np.ones((1, 2), int))
    with pytest.raises(HwnetError, match=r"acc_type int2 does not match .*\(int3\)"):
        ir.load(tmp_path / "acc.npz")
    hdr["layers"] = [{"op": "dense", "name": "d", "weights": "missing", "thresholds": None}]
    np.savez(tmp_path / "miss.npz", __hwnet_ir__=json.dumps(hdr))
    with pytest.raises(HwnetError, match="array 'missing' is missing"):
        ir.load(tmp_path / "miss.npz")


def test_pickled_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile
    with zipfile.ZipFile(tmp_path / "p.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "__hwnet_ir__.npy")
    with pytest.raises(HwnetError):
        ir.load(tmp_path / "p.npz")
