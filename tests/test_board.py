# amaranth: UnusedElaboratable=no

"""The board top: the serial protocol (host side), the UART, and the host client against the whole board top
simulated bit by bit on its UART pins, bit-exact against the golden model, with a corrupted line."""

import binascii

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnet import compiler, golden, protocol
from hwnet.errors import HwnetError
from hwnet.gateware.board import BoardTop
from hwnet.gateware.testing import random_network
from hwnet.gateware.uart import UartRx, UartTx
from hwnet.host import BoardClient, SimTransport

# -- protocol --------------------------------------------------------------------------------------------------------


def test_crc_is_ccitt_false():
    assert protocol.crc16(b"123456789") == 0x29B1  # the catalogue check value of CRC-16/CCITT-FALSE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([protocol.INFER, protocol.INFO]), st.integers(0, 255),
                          st.binary(min_size=3, max_size=3)), min_size=1, max_size=5),
       st.lists(st.binary(max_size=12), min_size=6, max_size=6))
def test_parser_finds_every_frame_between_garbage(frames, garbage):
    # garbage between frames (which may even hold sync bytes and whole bad headers) never hides a good frame
    lengths = {protocol.INFER: 3, protocol.INFO: 3}
    stream = b"".join(g + protocol.encode_frame(k, s, p) for g, (k, s, p) in zip(garbage, frames)) + garbage[-1]
    parser = protocol.FrameParser(lengths)
    got = []
    for k in range(0, len(stream), 5):  # in pieces
        got += parser.feed(stream[k:k + 5])
    good = [(f.kind, f.seq, f.payload) for f in got if f.ok]
    it = iter(good)
    assert all(any(g == want for g in it) for want in frames)  # in order, none lost


def test_parser_reports_bad_frames():
    parser = protocol.FrameParser({protocol.INFER: 2})
    good = protocol.encode_frame(protocol.INFER, 7, b"ab")
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    bad_version = good[:2] + b"\x09" + good[3:]
    bad_length = protocol.encode_frame(protocol.INFER, 8, b"abc")
    bad_type = protocol.encode_frame(0x33, 9, b"ab")
    frames = parser.feed(bad_crc + bad_version + bad_length + bad_type + good)
    assert [(f.ok, f.error) for f in frames][0] == (False, protocol.BAD_CRC)
    assert [f.error for f in frames if not f.ok][1:4] == [protocol.BAD_VERSION, protocol.BAD_LENGTH, protocol.BAD_TYPE]
    assert frames[-1] == protocol.Frame(protocol.INFER, 7, b"ab")


@pytest.mark.parametrize("lanes, bits", [(1, 1), (3, 5), (8, 1), (4, 8), (7, 3)])
def test_pack_beats_round_trip(lanes, bits):
    rng = np.random.default_rng(lanes * 10 + bits)
    codes = rng.integers(0, 1 << bits, size=lanes * 4)
    data = protocol.pack_beats(codes, lanes, bits)
    assert len(data) == 4 * -(-lanes * bits // 8)
    np.testing.assert_array_equal(protocol.unpack_beats(data, lanes, bits), codes)
    word = int.from_bytes(data[:protocol.beat_bytes(lanes, bits)], "little")
    assert [(word >> (j * bits)) & ((1 << bits) - 1) for j in range(lanes)] == list(codes[:lanes])


# -- UART ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [4, 7, 10])
def test_uart_loopback(divisor):
    from amaranth.hdl import Module
    rng = np.random.default_rng(divisor)
    data = [int(b) for b in rng.integers(0, 256, size=12)]
    m = Module()
    m.submodules.tx = tx = UartTx(divisor=divisor)
    m.submodules.rx = rx = UartRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def send(ctx):
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)
        await ctx.tick().repeat(12 * divisor)

    async def receive(ctx):
        ctx.set(rx.o.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(rx.o.valid, rx.o.payload):
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive, background=True)
    sim.run()
    assert got == data


def test_uart_divisor_is_checked():
    with pytest.raises(HwnetError, match=r"^divisor=3 clock cycles per bit is too few"):
        UartTx(divisor=3)


# -- the board top ---------------------------------------------------------------------------------------------------

def _board(seed, divisor=4, cnn=False):
    rng = np.random.default_rng(seed)
    if cnn:
        from hwnet.gateware.testing import random_cnn
        net = random_cnn(rng, max_cycles=16)
    else:
        net = random_network(rng, input_size=int(rng.choice([8, 12, 16])), hidden=[int(rng.choice([6, 8]))],
                             outputs=int(rng.choice([3, 5])), input_type="uint4", max_cycles=16)
    plan = compiler.plan(net)
    return net, plan, BoardTop(plan=plan, divisor=divisor), rng


@pytest.mark.parametrize("seed, cnn", [(60, False), (61, False), (62, True), (63, True)])
def test_client_against_the_simulated_board_top_is_bit_exact(seed, cnn):
    net, plan, top, rng = _board(seed, cnn=cnn)
    transport = SimTransport(top)
    client = BoardClient(transport, plan, timeout=0.05)
    assert client.check() == protocol.DesignInfo.of_plan(plan)
    x = rng.choice(net.input_type.values(), size=(12, net.input_size))
    got = client.infer_batch(x)
    np.testing.assert_array_equal(got, golden.execute(net, x))
    assert transport.leds == golden.classify(golden.execute(net, x[-1:]))[0]
    assert client.errors == []


@pytest.mark.parametrize("out_type", ["bipolar", "ternary", "uint2", "int3"])
def test_leds_show_the_class_of_thresholded_outputs(out_type):
    # the argmax orders values, not wire codes: bipolar +1 is code 1, ternary and int<k> are two's complement
    for seed in range(80, 120):  # the first network whose classes vary over the inputs
        rng = np.random.default_rng(seed)
        net = random_network(rng, input_size=8, hidden=[6], outputs=5, input_type="uint4", last_raw=False,
                             last_out_type=out_type, max_cycles=16)
        x = rng.choice(net.input_type.values(), size=(8, net.input_size))
        classes = golden.classify(golden.execute(net, x))
        if len(set(classes.tolist())) > 2:
            break
    plan = compiler.plan(net)
    transport = SimTransport(BoardTop(plan=plan, divisor=4))
    client = BoardClient(transport, plan, timeout=0.05)
    assert len(set(classes.tolist())) > 2
    for row, want in zip(x, classes):
        np.testing.assert_array_equal(client.infer_batch(row[None]), golden.execute(net, row[None]))
        assert transport.leds == want


def test_recovers_from_a_corrupted_line():
    net, plan, top, rng = _board(70)
    writes = {"n": 0}

    def noise(g, data):
        # garbage before every frame; the 2nd frame's payload bit flipped (bad CRC), the 4th's header cut short
        writes["n"] += 1
        data = bytearray(data)
        if writes["n"] == 2:
            data[8] ^= 0x10
        if writes["n"] == 4:
            data = data[:5]
        return bytes(g.integers(0, 256, size=int(g.integers(1, 6)))) + bytes(data)

    client = BoardClient(SimTransport(top, noise=noise, seed=3), plan, timeout=0.02)
    x = rng.choice(net.input_type.values(), size=(4, net.input_size))
    np.testing.assert_array_equal(client.infer_batch(x), golden.execute(net, x))
    assert protocol.BAD_CRC in [code for _, code in client.errors]


def test_malformed_frames_get_their_error_code_and_the_next_frame_works():
    net, plan, top, rng = _board(71)
    transport = SimTransport(top)
    info = protocol.DesignInfo.of_plan(plan)
    parser = protocol.FrameParser({protocol.RESULT: info.output_payload, protocol.ERROR: 1,
                                   protocol.INFO_REPLY: protocol.INFO_BYTES})
    x = rng.choice(net.input_type.values(), size=net.input_size)
    payload = protocol.pack_beats(net.input_type.encode(x), plan.input_lanes, plan.input_type.bits)
    good = protocol.encode_frame(protocol.INFER, 5, payload)

    def replies(data, count=1):
        transport.write(data)
        frames = []
        for _ in range(40):
            frames += parser.feed(transport.read(0.002))
            if len(frames) == count:
                break
        return [(f.kind, f.seq, f.payload) for f in frames]

    assert replies(good[:-1] + bytes([good[-1] ^ 0xFF])) == [(protocol.ERROR, 5, bytes([protocol.BAD_CRC]))]
    assert replies(good[:2] + b"\x02" + good[3:]) == [(protocol.ERROR, 5, bytes([protocol.BAD_VERSION]))]
    assert replies(protocol.encode_frame(protocol.INFER, 6, payload + b"\x00")) == \
        [(protocol.ERROR, 6, bytes([protocol.BAD_LENGTH]))]
    assert replies(protocol.encode_frame(0x44, 7, b"")) == [(protocol.ERROR, 7, bytes([protocol.BAD_TYPE]))]
    (kind, seq, out), = replies(good)
    assert (kind, seq) == (protocol.RESULT, 5)
    y = plan.output_type.decode(protocol.unpack_beats(out, plan.output_lanes, plan.output_type.bits))
    np.testing.assert_array_equal(y, golden.execute(net, x[None])[0])
    # a second INFER while the first is being answered is refused as an overrun, the first still answered
    both = replies(good + protocol.encode_frame(protocol.INFER, 9, payload), count=2)
    assert both[0][:2] == (protocol.ERROR, 9) or both[0][:2] == (protocol.RESULT, 5)
    assert {(k, s) for k, s, _ in both} == {(protocol.RESULT, 5), (protocol.ERROR, 9)}


def test_design_id_hashes_the_network():
    net, plan, top, _ = _board(72)
    assert top.info.design_id == binascii.crc32(__import__("hwnet").ir.to_bytes(net)) & 0xFFFFFFFF
    with pytest.raises(HwnetError, match=r"^divisor=2 clock cycles per bit is too few"):
        BoardTop(plan=plan, divisor=2)


# -- a design with weights in SPRAM: the image loaded over the link ----------------------------------------------

def _spram_board(seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng, input_size=32, hidden=[16], outputs=8, input_type="uint4", max_cycles=64)
    streamed = {"fc0": (1, 16), "fc1": (1, 8)}  # 32 + 16 words of 16 and 8 bits: three LOAD chunks
    layers = [layer.replace(pe=streamed[layer.name][0], simd=streamed[layer.name][1], weight_storage="spram")
              if layer.name in streamed else layer for layer in net.layers]
    net = net.replace_layers(layers)
    plan = compiler.plan(net)
    assert plan.spram_words == 48 > 2 * protocol.LOAD_WORDS
    return net, plan, BoardTop(plan=plan, divisor=4), rng


def test_spram_image_loads_over_the_link_then_inference_is_bit_exact():
    net, plan, top, rng = _spram_board(80)
    client = BoardClient(SimTransport(top), plan, timeout=0.05, retries=1)
    x = rng.choice(net.input_type.values(), size=(6, net.input_size))
    with pytest.raises(HwnetError, match="did not answer"):
        client.infer(x[0])  # not loaded yet
    assert client.errors[-1][1] == protocol.NOT_LOADED
    seen = []
    assert client.load(progress=lambda n, total: seen.append((n, total))) == 3  # chunks of 16, 16 and 16 words
    assert seen[-1] == (48, 48)
    assert client.load() == 1  # loaded already: the board answers the first chunk with the whole count
    np.testing.assert_array_equal(client.infer_batch(x), golden.execute(net, x))


def test_spram_load_survives_a_corrupted_line_and_never_loads_a_word_twice():
    net, plan, top, rng = _spram_board(81)
    writes = {"n": 0}

    def noise(g, data):
        # the 2nd frame's payload bit flipped (bad CRC: the chunk is dropped), the 3rd cut short (no reply: resent),
        # garbage before every frame
        writes["n"] += 1
        data = bytearray(data)
        if writes["n"] == 2:
            data[20] ^= 0x04
        if writes["n"] == 3:
            data = data[:30]
        return bytes(g.integers(0, 256, size=int(g.integers(1, 6)))) + bytes(data)

    transport = SimTransport(top, noise=noise, seed=4)
    client = BoardClient(transport, plan, timeout=0.05)
    assert client.load() == 3  # answered chunks: the dropped and the cut one were resent
    assert protocol.BAD_CRC in [code for _, code in client.errors]
    x = rng.choice(net.input_type.values(), size=(4, net.input_size))
    np.testing.assert_array_equal(client.infer_batch(x), golden.execute(net, x))


def test_spram_chunks_out_of_order_are_not_taken():
    net, plan, top, _ = _spram_board(82)
    transport = SimTransport(top)
    parser = protocol.FrameParser({protocol.LOADED: 4, protocol.ERROR: 1})
    image = plan.spram_image()

    def exchange(seq, payload):
        transport.write(protocol.encode_frame(protocol.LOAD, seq, payload))
        for _ in range(60):
            frames = [f for f in parser.feed(transport.read(0.002)) if f.ok]
            if frames:
                return frames[0].kind, frames[0].payload
        return None

    count = lambda n: (protocol.LOADED, n.to_bytes(4, "little"))  # noqa: E731
    assert exchange(1, protocol.load_payload(image, 16)) == count(0)   # ahead of the count: not taken
    assert exchange(2, protocol.load_payload(image, 0)) == count(16)
    assert exchange(3, protocol.load_payload(image, 0)) == count(16)   # a repeat: not taken again
    assert exchange(4, protocol.load_payload(image, 16)) == count(32)
    assert exchange(5, protocol.load_payload(image, 32)) == count(48)  # the last, short chunk
    assert exchange(6, protocol.load_payload(image, 32)) == count(48)
    assert exchange(7, b"\x00" * 5) == (protocol.ERROR, bytes([protocol.BAD_LENGTH]))
