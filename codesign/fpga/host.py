"""Host side of the UART board top: send input vectors, read answers, compare with the golden model.

Framing (see :mod:`codesign.fpga.wrappers`): request ``0xA5`` + input fields (each
``ceil(bits/8)`` bytes, little-endian, two's complement); reply ``0x5A`` + output fields (same
packing, sign-extended) + argmax class (1 byte; 2 when there are more than 256 output fields).

Command line (needs ``pip install pyserial``)::

    python -m codesign.fpga.host --port /dev/ttyUSB0 runs/digits_mlp        # a run directory
    python -m codesign.fpga.host --port /dev/ttyUSB0 path/to/rtl -n 20      # random codes

With a run directory the vectors are ``export/test_x.npy`` and the expected answers come from
``codesign.golden.GoldenModel(export/model.onnx).run_codes``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError, ToolMissingError, VerificationError
from codesign.fpga.interface import Interface, load_interface
from codesign.fpga.wrappers import REPLY_BYTE, START_BYTE, frame_sizes

BAUD = 115200


# ---- framing ---------------------------------------------------------------------------------
def encode_request(iface: Interface, codes: Sequence[int]) -> bytes:
    """Request frame for one input vector of integer codes (``input.fields`` of them)."""
    i = iface.input
    codes = [int(c) for c in np.asarray(codes).reshape(-1)]
    if len(codes) != i.fields:
        raise CodesignError(f"input vector has {len(codes)} codes, the accelerator takes {i.fields}")
    lo, hi = (-(1 << (i.bits - 1)), (1 << (i.bits - 1)) - 1) if i.signed else (0, (1 << i.bits) - 1)
    out = bytearray([START_BYTE])
    for k, c in enumerate(codes):
        if not lo <= c <= hi:
            kind = "signed" if i.signed else "unsigned"
            raise CodesignError(f"input field {k} = {c} outside the {i.bits}-bit {kind} range")
        out += (c & ((1 << (8 * i.bytes_per_field)) - 1)).to_bytes(i.bytes_per_field, "little")
    return bytes(out)


def reply_length(iface: Interface) -> int:
    return frame_sizes(iface)[1]


def decode_reply(iface: Interface, data: bytes) -> tuple[list[int], int]:
    """(output codes, argmax class) of one reply frame."""
    o = iface.output
    n = reply_length(iface)
    if len(data) != n:
        raise CodesignError(f"reply has {len(data)} bytes, expected {n} (timeout or wrong bitstream?)")
    if data[0] != REPLY_BYTE:
        raise CodesignError(f"reply starts with 0x{data[0]:02X}, expected 0x{REPLY_BYTE:02X}")
    bpf = o.bytes_per_field
    codes = [int.from_bytes(data[1 + k * bpf: 1 + (k + 1) * bpf], "little", signed=o.signed) for k in range(o.fields)]
    cls = int.from_bytes(data[1 + o.fields * bpf:], "little")
    return codes, cls


def argmax_first(codes: Sequence[int]) -> int:
    """The board's argmax: index of the first maximum."""
    return int(np.argmax(np.asarray(codes)))


# ---- serial link -----------------------------------------------------------------------------
class BoardLink:
    """A serial connection to a board running the codesign UART top."""

    def __init__(self, port: str, iface: Interface, baud: int = BAUD, timeout: float = 2.0):
        try:
            import serial  # pyserial
        except ImportError:
            raise ToolMissingError("talking to a board needs pyserial: pip install pyserial") from None
        self.iface = iface
        self.ser = serial.Serial(port, baud, timeout=timeout)
        self.ser.reset_input_buffer()

    def infer(self, codes: Sequence[int]) -> tuple[list[int], int]:
        self.ser.write(encode_request(self.iface, codes))
        return decode_reply(self.iface, self.ser.read(reply_length(self.iface)))

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> BoardLink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- vectors and expected answers ------------------------------------------------------------
def golden_reference(iface: Interface, onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """``codes (n, fields) -> expected output codes (n, out_fields)`` from the golden model."""
    from codesign.golden import GoldenModel

    g = GoldenModel(onnx_path)
    shape = tuple(iface.input.shape)

    def ref(x: np.ndarray) -> np.ndarray:
        y, _ = g.run_codes(np.asarray(x).reshape((len(x), *shape)))
        return np.asarray(y).reshape(len(x), -1)

    return ref


def load_vectors(iface: Interface, run_dir: Path | None, n: int, seed: int = 0) -> np.ndarray:
    """Input codes (n, fields): the run's test set when there is one, else random codes."""
    i = iface.input
    if run_dir is not None and (run_dir / "export" / "test_x.npy").exists():
        x = np.load(run_dir / "export" / "test_x.npy")[:n]
        codes = np.ldexp(x.reshape(len(x), -1), -i.scale_exp)
        return np.rint(codes).astype(np.int64)
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (i.bits - 1)), 1 << (i.bits - 1)) if i.signed else (0, 1 << i.bits)
    return rng.integers(lo, hi, size=(n, i.fields), dtype=np.int64)


def check(infer: Callable[[Sequence[int]], tuple[list[int], int]], vectors: np.ndarray,
          reference: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, Any]:
    """Send every vector through ``infer``; count mismatches against ``reference`` (if any)."""
    expected = reference(vectors) if reference is not None else None
    mismatches, class_mismatches, first = 0, 0, None
    t0 = time.perf_counter()
    results = []
    for k, v in enumerate(vectors):
        codes, cls = infer(v)
        results.append((codes, cls))
        if argmax_first(codes) != cls:
            class_mismatches += 1
        if expected is not None and list(map(int, expected[k])) != codes:
            mismatches += 1
            if first is None:
                first = {"vector": k, "expected": list(map(int, expected[k])), "got": codes}
    seconds = time.perf_counter() - t0
    return {"vectors": len(vectors), "mismatches": mismatches if expected is not None else None,
            "argmax_mismatches": class_mismatches, "first_mismatch": first,
            "seconds": seconds, "vectors_per_s": len(vectors) / seconds if seconds else None, "results": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codesign.fpga.host", description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path, help="run directory (with rtl/ and export/) or rtl folder with interface.json")
    ap.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    ap.add_argument("--baud", type=int, default=BAUD)
    ap.add_argument("-n", type=int, default=100, help="number of vectors")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        run_dir = a.path if (a.path / "rtl" / "interface.json").exists() else None
        iface = load_interface(a.path / "rtl" if run_dir else a.path)
        onnx = (iface.folder / iface.onnx).resolve() if iface.onnx else None
        reference = golden_reference(iface, onnx) if onnx and onnx.exists() else None
        vectors = load_vectors(iface, run_dir, a.n, a.seed)
        with BoardLink(a.port, iface, a.baud) as link:
            r = check(link.infer, vectors, reference)
        r.pop("results")
        print({k: v for k, v in r.items()})
        if r["mismatches"] or r["argmax_mismatches"]:
            raise VerificationError(f"{r['mismatches']} of {r['vectors']} vectors differ from the golden model; "
                                    f"first: {r['first_mismatch']}")
    except CodesignError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
