# amaranth: UnusedElaboratable=no

"""Board targets without building a bitstream: every board's platform takes the board top (its UART and LED pins
exist), the UART divisor and the board-top reserve, ``hwnet program`` through a stand-in programmer that records
its arguments, and the pyserial transport."""

import json
import stat
import sys

import numpy as np
import pytest

from hwnet import compiler, protocol
from hwnet.boards import BOARD_TARGETS, PROGRAMMER_VARS, get_board
from hwnet.build import BOARD_TOP, board_top_reserve, uart_divisor
from hwnet.cli import main
from hwnet.errors import HwnetError
from hwnet.gateware.board import BoardPlatformTop
from hwnet.gateware.testing import random_network


@pytest.fixture(scope="module")
def small_plan():
    net = random_network(np.random.default_rng(3), input_size=16, hidden=[8], outputs=4, input_type="uint4",
                         max_cycles=8)
    return compiler.plan(compiler.choose_folding(net, 8))


@pytest.mark.parametrize("name", list(BOARD_TARGETS))
def test_every_board_takes_the_board_top(name, small_plan, tmp_path):
    # amaranth-boards' toolchain-free smoke build: the pins the board top requests exist, and the constraints
    # file names the UART and every LED
    board = get_board(name)
    platform = board.make_platform()
    top = BoardPlatformTop(plan=small_plan, board=board, divisor=uart_divisor(board.clock_hz, 115200))
    plan = platform.prepare(top, name=BOARD_TOP)
    files = plan.files
    constraints = files[f"{BOARD_TOP}.pcf" if board.family == "ice40" else f"{BOARD_TOP}.lpf"]
    constraints = constraints if isinstance(constraints, str) else constraints.decode()
    assert "uart_0__tx" in constraints and "uart_0__rx" in constraints
    assert constraints.count("led") >= len(board.leds)
    if board.uart_pins is not None:  # an external adapter on the header pins the board's notes name
        conn, number, tx, rx, _ = board.uart_pins
        assert platform.connectors[conn, number].mapping[tx] in constraints
        assert platform.connectors[conn, number].mapping[rx] in constraints


def test_board_names_and_parts():
    assert get_board("icebreaker").budget.name == "iCE40UP5K" and get_board("icebreaker").budget.spram == 4
    assert get_board("ulx3s-85f").budget.lut4 == 83640
    assert get_board("icestick").budget.ebr == 16
    with pytest.raises(HwnetError, match="unknown board 'icebreaker2'; choose one of icebreaker, "):
        get_board("icebreaker2")


@pytest.mark.parametrize("clock, baud, divisor", [(12e6, 115200, 104), (25e6, 115200, 217), (48e6, 9600, 5000)])
def test_uart_divisor(clock, baud, divisor):
    assert uart_divisor(clock, baud) == divisor
    assert abs(clock / divisor - baud) / baud < 0.02


def test_uart_divisor_refuses_rates_it_cannot_make():
    with pytest.raises(HwnetError, match="too fast for a 12 MHz clock"):
        uart_divisor(12e6, 4_000_000)
    with pytest.raises(HwnetError, match="off"):
        uart_divisor(12e6, 2_200_000)  # 5.45 cycles per bit: 10% off at divisor 5


def test_board_top_reserve_leaves_room_and_refuses_a_part_too_small():
    net = random_network(np.random.default_rng(0), input_size=64, hidden=[32], outputs=10, input_type="uint8")
    up5k = get_board("icebreaker").budget
    less = board_top_reserve(up5k, net, 8)
    assert less.lut4 < up5k.lut4 and less.ff < up5k.lut4
    assert less.ebr == up5k.ebr - 2  # the 64-byte payload queue and the SPRAM loader's chunk queue
    assert board_top_reserve(up5k, net, 512).lut4 < less.lut4  # a wider input beat costs flip-flops
    from dataclasses import replace
    with pytest.raises(HwnetError, match="too small for the board top"):
        board_top_reserve(replace(up5k, lut4=500), net, 8)


# -- hwnet program ------------------------------------------------------------------------------------------------


def _stand_in(tmp_path):
    """An executable that records its arguments and a copy of the file it was given last."""
    script = tmp_path / "programmer"
    script.write_text(f"#!{sys.executable}\nimport json, shutil, sys\n"
                      f"json.dump(sys.argv[1:], open({str(tmp_path / 'args.json')!r}, 'w'))\n"
                      f"shutil.copyfile(sys.argv[-1], {str(tmp_path / 'got')!r})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize("name, expect", [("icebreaker", []), ("icestick", []), ("ulx3s-85f", ["-b", "ulx3s", "-m"]),
                                          ("ecpix5-85f", ["-c", "ft2232", "-m"]), ("orangecrab-25f", ["-a 0", "-D"])])
def test_program_runs_the_boards_programmer(name, expect, tmp_path, monkeypatch, capsys):
    board = get_board(name)
    monkeypatch.setenv(PROGRAMMER_VARS[board.programmer], str(_stand_in(tmp_path)))
    bitstream = tmp_path / f"design.{board.bitstream}"
    payload = bytes(np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8))
    bitstream.write_bytes(payload)
    assert main(["program", str(bitstream), "--board", name]) == 0
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[:-1] == expect
    assert (tmp_path / "got").read_bytes() == payload  # the programmer got this bitstream, whole
    assert f"programmed {board.title}" in capsys.readouterr().out


def test_program_refuses_bad_input(tmp_path, monkeypatch, capsys):
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\0")
    assert main(["program", str(bit), "--board", "icebreaker"]) == 2
    assert "the iCEBreaker takes a .bin bitstream" in capsys.readouterr().err
    assert main(["program", str(tmp_path / "none.bin"), "--board", "icebreaker"]) == 2
    assert "no such bitstream" in capsys.readouterr().err
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "missing"))
    assert main(["program", str(bit), "--board", "ulx3s-25f"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "openFPGALoader" in err
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setenv("OPENFPGALOADER", str(failing))
    assert main(["program", str(bit), "--board", "ulx3s-25f"]) == 2
    assert "failed with exit status 3" in capsys.readouterr().err


# -- the serial transport ---------------------------------------------------------------------------------------


def test_serial_transport_over_a_loopback_port():
    from hwnet.host import SerialTransport
    t = SerialTransport("loop://", baud=115200)
    frame = protocol.encode_frame(protocol.INFO, 5)
    t.write(frame)
    got = b""
    for _ in range(10):
        got += t.read(0.05)
    assert got == frame
    assert t.read(0.01) == b""
    t.close()


def test_serial_transport_reports_a_missing_port():
    from hwnet.host import SerialTransport
    with pytest.raises(HwnetError, match="cannot open serial port '/dev/hwnet-no-such-port'"):
        SerialTransport("/dev/hwnet-no-such-port", baud=115200)


def test_run_refuses_a_missing_build(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 4)))
    assert main(["run", str(tmp_path / "x.npy"), "--board", "icebreaker", "--port", "sim",
                 "--build", str(tmp_path / "nothing")]) == 2
    assert "not a board build" in capsys.readouterr().err


def test_programmer_vars_match_amaranth_boards():
    # the variables hwnet sets are the ones amaranth-boards' toolchain_program reads
    import inspect
    for board in BOARD_TARGETS.values():
        source = inspect.getsource(type(board.make_platform()).toolchain_program)
        assert PROGRAMMER_VARS[board.programmer] in source, board.name


def test_run_over_a_serial_port_against_the_simulated_board_top(small_plan, tmp_path, capsys):
    # `hwnet run` through pyserial on a real tty: a pseudo-terminal whose other end a thread bridges to the board
    # top simulated bit by bit on its UART pins (the bytes, not the frames, cross the bridge)
    import os
    import threading
    import time
    import tty
    from hwnet import golden, ir
    from hwnet.gateware.board import BoardTop
    from hwnet.gateware.testing import random_inputs
    from hwnet.host import SimTransport
    network = small_plan.network
    build = tmp_path / "build"
    (build / "design").mkdir(parents=True)
    ir.save(network, build / "design" / "network.npz")
    (build / "board.json").write_text(json.dumps({"board": "icebreaker", "uart": {"baud": 115200}}))
    x = random_inputs(np.random.default_rng(5), network, 4)
    np.save(tmp_path / "x.npy", x)
    master, slave = os.openpty()
    tty.setraw(slave)
    board = SimTransport(BoardTop(plan=compiler.plan(network), divisor=4, leds=7))
    stop = threading.Event()

    def bridge():
        os.set_blocking(master, False)
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                data = b""
            if data:
                board.write(data)
            out = board.read(400e-6)  # 400 simulated cycles
            if out:
                os.write(master, out)
            elif not data:
                time.sleep(0.001)

    thread = threading.Thread(target=bridge, daemon=True)
    thread.start()
    try:
        rc = main(["run", str(tmp_path / "x.npy"), "--board", "icebreaker", "--port", os.ttyname(slave),
                   "--build", str(build), "--timeout", "10", "--outputs", str(tmp_path / "y.npy")])
    finally:
        stop.set()
        thread.join(5)
        os.close(master)
        os.close(slave)
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), golden.execute(network, x))
    assert "0 elements in 0 of 4 vectors" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["icebreaker", "upduino-v3", "icestick", "ulx3s-85f", "orangecrab-25f", "ecpix5-45f"])
def test_clock_choice(name):
    # the board clock itself needs no PLL; a PLL clock chosen `below` a target never exceeds it and makes the baud
    from hwnet.build import _pll_or_board
    board = get_board(name)
    assert _pll_or_board(board, board.clock_hz, 115200) == (board.clock_hz, None)
    for target in (17e6, 31.7e6, 60e6, 99e6):
        hz, params = _pll_or_board(board, target, 115200, below=True)
        assert hz <= target and params.f_out_hz == hz and params.f_in_hz == board.pll_in_hz
        assert target - hz < 0.1 * target  # and not far below it
        uart_divisor(hz, 115200)
    with pytest.raises(HwnetError, match="out of range"):
        _pll_or_board(board, 500e6, 115200)
