"""The default model on a board: the UART board top around the folded digits_mlp accelerator, simulated
in cocotb bytes-in/bytes-out, answers 100 test vectors exactly as the golden model does."""

import numpy as np

from codesign import config, flow
from codesign.fpga import simulate_board
from codesign.golden import GoldenModel


def test_uart_board_top_digits_mlp(tmp_path):
    cfg = config.load("digits_mlp", {"train.epochs": 3})
    rd = flow.run_flow(cfg, tmp_path / "run", until="rtl")
    g = GoldenModel(rd.path("export", "model.onnx"))
    x = np.load(rd.path("export", "test_x.npy"))[:100]
    codes = np.rint(x * 2.0 ** -g.input_spec.scale_exp).astype(np.int64)
    expected, _ = g.run_codes(codes)
    res = simulate_board(rd.path("rtl"), codes.tolist(), board="icebreaker", build_dir=tmp_path / "bsim",
                         simulator="verilator", clks_per_bit=4)
    got = np.array([r[0] for r in res])
    cls = np.array([r[1] for r in res])
    assert len(res) == 100
    assert int((got != expected).any(axis=1).sum()) == 0
    assert np.array_equal(cls, expected.argmax(axis=1))
