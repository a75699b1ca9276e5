"""verify(): simulate generated RTL and compare it bit for bit with the golden model."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError, StageInputError, VerificationError
from codesign.run import load_array
from codesign.verify import sim
from codesign.verify.iface import Interface, hex_to_codes, load_interface, pack_hex_lines
from codesign.verify.reference import Reference, make_reference, scalar_exp
from codesign.verify.stimulus import KINDS, make_stimulus
from codesign.verify.wrapper import TB_TOP, depth_for, generate_wrapper

STYLES = ("stream", "loop")
GAP_PROB = 64  # /256: probability that an input beat is held back (tvalid low) in the stall phase
BP_PROB = 64  # /256: probability that the output's tready is low in the stall phase


# ---- simulation of one batch of vectors -------------------------------------------------------

class SimResult:
    def __init__(self, got: np.ndarray, unknown: np.ndarray, out_cycles: np.ndarray, in_cycles: np.ndarray,
                 status: dict[str, int], taps: list[tuple[np.ndarray, np.ndarray]], run_s: float, core_s: float,
                 build: sim.Build, work: Path):
        self.got, self.unknown, self.out_cycles, self.in_cycles = got, unknown, out_cycles, in_cycles
        self.status, self.taps, self.run_s, self.core_s, self.build, self.work = (
            status, taps, run_s, core_s, build, work)
        self.cpu_s = 0.0


def _read_fixed(path: Path, fields: list[int]) -> list[np.ndarray]:
    """Parse a file of fixed-width lines ``<hex> <hex> ...`` -> one (N, width) uint8 array per column."""
    data = path.read_bytes() if path.exists() else b""
    line = sum(fields) + len(fields)  # separators + newline
    n = len(data) // line
    if n * line != len(data):
        raise CodesignError(f"{path}: unexpected line format (simulator output is not fixed width)")
    a = np.frombuffer(data, np.uint8).reshape(n, line)
    out, pos = [], 0
    for w in fields:
        out.append(a[:, pos:pos + w])
        pos += w + 1
    return out


def _hex_u64(cols: np.ndarray) -> np.ndarray:
    if len(cols) == 0:
        return np.zeros(0, np.int64)
    return np.array([int(r, 16) for r in cols.view(f"S{cols.shape[1]}").ravel().tolist()], dtype=np.int64)


def _status(path: Path) -> dict[str, int]:
    st: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            try:
                st[k] = int(v)
            except ValueError:
                pass
    return st


def _status_checks(r: SimResult, n: int) -> list[str]:
    """What the testbench's status file says beyond the comparison: a run that did not finish (no status,
    a simulator that stopped early), outputs the log and the status disagree on, beats after the last
    expected vector. Each is a failure: a verification must not pass because nothing was checked."""
    st = r.status
    if not st.get("finished"):
        return [f"the testbench did not finish (no complete status file in {r.work}): the simulator stopped early "
                "or crashed; see its log"]
    out: list[str] = []
    if st.get("out", -1) != len(r.got):
        out.append(f"the testbench counted {st.get('out')} output beats, its log holds {len(r.got)}")
    if st.get("extra", 0):
        out.append(f"{st['extra']} output beat(s) after the last expected vector (the design emits more vectors "
                   "than it was given)")
    if len(r.got) < n and not st.get("timeout"):
        out.append(f"only {len(r.got)} of {n} outputs")
    return out


def simulate(iface: Interface, x: np.ndarray, *, simulator: str = "verilator", style: str = "stream",
             stall_from: int | None = None, gap: int = GAP_PROB, bp: int = BP_PROB, seed: int = 0,
             waves: bool = False, hdl_clock: bool | None = None, work: Path, build_root: Path | None = None,
             with_taps: bool = True, verilator_opt: str | None = None) -> SimResult:
    """Run ``x`` (N, fields) codes through the RTL; return what came out and when. ``verilator_opt``:
    make variables for Verilator's C++ compile (:func:`codesign.verify.sim.build`).

    ``hdl_clock``: the stream wrapper toggles its clock itself (``always #5``) instead of a cocotb
    clock; None picks it for Icarus (no VPI callback per edge: ~10% less CPU on the folded MLP, ~30%
    on a tiny DUT, no build cost) and not for Verilator (it needs ``--timing``, a slower build)."""
    if style not in STYLES:
        raise CodesignError(f"unknown testbench style {style!r}: use one of {', '.join(STYLES)}")
    if hdl_clock is None:
        hdl_clock = simulator == "icarus"
    n = len(x)
    stall_from = n if stall_from is None else stall_from
    work.mkdir(parents=True, exist_ok=True)
    for f in work.glob("*.txt"):
        f.unlink()
    in_file = work / "in.hex"
    # io=stream: each vector is input.beats beats (one line each); STALL_FROM and NIN count beats
    nb = iface.input.beats
    in_file.write_bytes(pack_hex_lines(iface.input.to_beats(x), iface.input.beat_stream()))
    lat = iface.latency_cycles or 0
    idle_limit = max(20000, 100 * (lat + (iface.ii or 1)))
    drain = max(64, 2 * (lat + (iface.ii or 1)))  # cycles the output is watched after the last expected vector
    taps = iface.taps if with_taps else []
    # the wrapper always has the tap loggers (so one build serves the main run and localization);
    # they write only when given a +TAP<k> file
    if style == "stream":
        wrapper = work / f"{TB_TOP}.v"
        wrapper.write_text(generate_wrapper(iface, depth_for(n * nb, iface.input.beat_width)))
        b = sim.build([*iface.sources(), wrapper], TB_TOP, simulator, waves=waves, hdl_clock=hdl_clock,
                      build_root=build_root, log_dir=work, public=[(TB_TOP, "clk"), (TB_TOP, "done")],
                      verilator_opt=verilator_opt)
        plus = [f"+IN={in_file}", f"+OUT={work / 'out.txt'}", f"+INLOG={work / 'inlog.txt'}",
                f"+STATUS={work / 'status.txt'}", f"+N={n}", f"+STALL_FROM={stall_from * nb}", f"+GAP={gap}",
                f"+BP={bp}", f"+SEED={seed + 1}", f"+IDLE={idle_limit}", f"+DRAIN={drain}"]
        plus += [f"+TAP{k}={work / f'tap{k}.txt'}" for k in range(len(taps))]
        if iface.io == "stream":
            plus.append(f"+NIN={n * nb}")
        if waves and simulator == "icarus":
            plus.append(f"+dumpfile_path={work / 'dump.fst'}")
        cfg: dict[str, Any] = {"hdl_clock": hdl_clock}
        module = "codesign.verify.tb_stream"
    else:
        b = sim.build(iface.sources(), iface.top, simulator, waves=waves, build_root=build_root, log_dir=work,
                      public=[(iface.top, "*")], verilator_opt=verilator_opt)
        plus = [f"+dumpfile_path={work / 'dump.fst'}"] if waves and simulator == "icarus" else []
        cfg = {"in_file": str(in_file), "out_hex_digits": iface.output.hex_digits, "stall_from": stall_from * nb,
               "gap": gap, "bp": bp, "seed": seed, "idle_limit": idle_limit, "drain": drain, "clock": iface.clock,
               "reset": iface.reset, "reset_active_low": iface.reset_active_low,
               "in": {"tdata": iface.input.tdata, "tvalid": iface.input.tvalid, "tready": iface.input.tready},
               "out": {"tdata": iface.output.tdata, "tvalid": iface.output.tvalid, "tready": iface.output.tready},
               "taps": [{"tdata": la.tap.tdata, "tvalid": la.tap.tvalid, "hex_digits": la.tap.hex_digits}
                        for la in taps if la.tap is not None]}
        if iface.io == "stream":
            cfg["n_out"] = n  # the input file holds n * beats beats
        module = "codesign.verify.tb_loop"
    run_s, cpu_s = sim.run(b, module, work, cfg, plusargs=plus, waves=waves)
    import json

    res = json.loads((work / "tb_result.json").read_text()) if (work / "tb_result.json").exists() else {}
    od = iface.output.hex_digits
    out_hex, out_cyc = _read_fixed(work / "out.txt", [od, 16])
    got, unknown = hex_to_codes(out_hex, iface.output)
    (in_cyc,) = _read_fixed(work / "inlog.txt", [16])
    tap_res = []
    for k, la in enumerate(taps):
        assert la.tap is not None
        (th,) = _read_fixed(work / f"tap{k}.txt", [la.tap.hex_digits])
        tap_res.append(hex_to_codes(th, la.tap))
    r = SimResult(got, unknown, _hex_u64(out_cyc), _hex_u64(in_cyc), _status(work / "status.txt"), tap_res,
                  run_s, float(res.get("run_s", run_s)), b, work)
    r.cpu_s = cpu_s
    return r


# ---- checks -----------------------------------------------------------------------------------

def _timing(r: SimResult, stall_from: int, iface: Interface) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latency (input accept -> output accept, with tready high) and II from the full-throughput phase.
    io=stream: per vector from its first input beat; the declared values are the maxima (the first
    vectors, entering an empty pipeline, may be faster)."""
    nb = iface.input.beats
    beats = r.in_cycles
    in_cycles = beats[::nb] if nb > 1 else beats  # first beat of every vector
    k = min(len(in_cycles), len(r.out_cycles), stall_from)
    lat: dict[str, Any] = {"declared": iface.latency_cycles, "measured_min": None, "measured_max": None}
    ii: dict[str, Any] = {"declared": iface.ii, "measured_min": None, "measured_max": None}
    if k > 0:
        limit = beats[stall_from * nb - 1] if stall_from * nb < len(beats) else np.iinfo(np.int64).max
        ok_idx = np.nonzero(r.out_cycles[:k] <= limit)[0]
        if len(ok_idx):
            d = r.out_cycles[ok_idx] - in_cycles[ok_idx]
            lat.update(measured_min=int(d.min()), measured_max=int(d.max()), vectors=int(len(ok_idx)))
        kin = min(len(in_cycles), stall_from)
        if kin > 1:
            dd = np.diff(in_cycles[:kin])
            vals, counts = np.unique(dd, return_counts=True)
            ii.update(measured_min=int(dd.min()), measured_max=int(dd.max()), measured_mode=int(vals[counts.argmax()]),
                      vectors=int(kin))
    if iface.io == "stream":
        lat["ok"] = lat["measured_min"] is not None and (
            iface.latency_cycles is None or lat["measured_max"] == iface.latency_cycles)
    else:
        lat["ok"] = lat["measured_min"] is not None and (
            iface.latency_cycles is None or lat["measured_min"] == lat["measured_max"] == iface.latency_cycles)
    ii["ok"] = ii["measured_max"] is None or iface.ii is None or ii["measured_max"] == iface.ii
    return lat, ii


def _first_mismatches(idx: np.ndarray, x: np.ndarray, exp: np.ndarray, got: np.ndarray, unknown: np.ndarray,
                      kinds: np.ndarray, limit: int) -> list[dict[str, Any]]:
    out = []
    for i in idx[:limit].tolist():
        rec: dict[str, Any] = {"index": int(i), "kind": KINDS[int(kinds[i])], "input": x[i].tolist(),
                               "expected": exp[i].tolist()}
        if i < len(got):
            rec["got"] = None if unknown[i] else got[i].tolist()
            if unknown[i]:
                rec["note"] = "output has x/z bits"
            else:
                rec["fields"] = np.nonzero(exp[i] != got[i])[0].tolist()[:32]
        else:
            rec["got"] = None
            rec["note"] = "no output beat (missing)"
        out.append(rec)
    return out


def _waves(iface: Interface, x: np.ndarray, kinds: np.ndarray, *, simulator: str, work: Path,
           build_root: Path | None, max_vectors: int, verilator_opt: str | None = None
           ) -> tuple[str | None, dict[str, Any] | None]:
    """A separate, shorter run with waveform dumping: the test set when there is one (realistic
    activity for energy estimates), else the first vectors; full throughput. Returns (file, toggles)."""
    test = np.nonzero(kinds == KINDS.index("test"))[0]
    sel = test[:max_vectors] if len(test) else np.arange(min(len(x), max_vectors))
    r = simulate(iface, x[sel], simulator=simulator, style="stream", waves=True, work=work, build_root=build_root,
                 with_taps=False, verilator_opt=verilator_opt)
    wf = sim.wave_file(r.build, work)
    if wf is None:
        return None, {"error": "the simulator wrote no waveform file"}
    from codesign.verify.toggles import toggle_summary

    try:
        t = toggle_summary(wf, iface)
    except Exception as e:  # toggles are informative; never fail verification for them
        t = {"error": f"{type(e).__name__}: {e}"}
    t["vectors"] = int(len(sel))
    t["stimulus"] = "test set" if len(test) else "first vectors (corners, random)"
    return str(wf), t


def _localize(iface: Interface, ref: Reference, xf: np.ndarray, *, simulator: str, work: Path,
              build_root: Path | None, regenerate: Callable[[Path], Path] | None,
              verilator_opt: str | None = None) -> dict[str, Any]:
    """Re-run failing vectors with per-layer debug taps and name the first layer that differs."""
    loc: dict[str, Any] = {"vectors": int(len(xf))}
    if ref.trace_codes is None:
        return {**loc, "method": None, "reason": "the reference has no per-layer trace"}
    use = iface
    if not iface.taps:
        if regenerate is None:
            return {**loc, "method": None, "reason": "the RTL has no debug taps (regenerate with debug_taps=True)"}
        try:
            use = load_interface(regenerate(work / "rtl_taps"))
        except Exception as e:  # a localization helper must not hide the real result
            return {**loc, "method": None, "reason": f"regenerating with debug taps failed: {e}"}
        if not use.taps:
            return {**loc, "method": None, "reason": "regenerated RTL has no debug taps"}
        loc["regenerated"] = str(use.folder)
    if use is not iface and simulator == "verilator" and sim.available("icarus"):
        simulator = "icarus"  # a fresh build is needed: Icarus compiles a large flat design much faster
    loc["simulator"] = simulator
    r = simulate(use, xf, simulator=simulator, style="stream", work=work / "localize", build_root=build_root,
                 verilator_opt=verilator_opt)
    trace = ref.trace(xf.reshape(len(xf), *use.input.shape)) or {}
    layers, first = [], None
    for (codes, unknown), la in zip(r.taps, use.taps, strict=True):
        ent: dict[str, Any] = {"name": la.name, "onnx_output": la.onnx_output}
        if la.onnx_output not in trace:
            ent["note"] = "tensor not in the reference trace"
            layers.append(ent)
            continue
        exp = np.asarray(trace[la.onnx_output]).reshape(len(xf), -1)
        m = min(len(codes), len(exp))
        bad = np.zeros(len(exp), bool)
        bad[m:] = True
        if m:
            bad[:m] = (codes[:m] != exp[:m]).any(axis=1) | unknown[:m]
        ent.update(compared=int(len(exp)), mismatches=int(bad.sum()))
        if bad.any():
            j = int(np.nonzero(bad)[0][0])
            ent["example"] = {"vector": j, "expected": exp[j].tolist(), "got": codes[j].tolist() if j < m else None}
            if first is None:
                first = la.name
        layers.append(ent)
    loc.update(method="taps", layers=layers, first_bad_layer=first)
    exp_out, _ = ref.run(xf.reshape(len(xf), *use.input.shape))
    exp_out = np.asarray(exp_out).reshape(len(xf), -1)
    m = min(len(r.got), len(exp_out))
    out_bad = int(len(exp_out) - m + ((r.got[:m] != exp_out[:m]).any(axis=1) | r.unknown[:m]).sum())
    loc["rerun_output_mismatches"] = out_bad
    if first is None:
        if out_bad == 0 and "regenerated" in loc:
            loc["note"] = ("the regenerated design (with taps) matches the golden model on these vectors: the "
                           "mismatch is not in what the generator produces (edited RTL?)")
        elif out_bad == 0:
            loc["note"] = ("these vectors pass when re-run alone at full throughput: the mismatch depends on the "
                           "handshake or on the preceding vectors (stalls, state)")
        else:
            loc["note"] = "every tapped layer matches: the difference is after the last tap (output stage)"
    return loc


# ---- steps of verify() ------------------------------------------------------------------------

def _core_inputs(test_x: np.ndarray | str | Path | None, ref: Reference) -> np.ndarray | None:
    """``test_x`` as the core's input: loaded when it is a file; float inputs through the reference's
    host pre-processing, which turns them into the core's input codes."""
    if isinstance(test_x, str | Path):
        test_x = load_array(test_x, "test_x")
    if test_x is not None and ref.preprocess is not None and not np.issubdtype(np.asarray(test_x).dtype, np.integer):
        test_x = ref.preprocess(np.asarray(test_x, dtype=np.float32))  # float inputs -> the core's input codes
    return test_x


def _input_checks(iface: Interface, spec: Any) -> list[str]:
    """Where interface.json and the reference's input spec disagree on the input grid."""
    checks: list[str] = []
    if spec is not None:
        def get(key: str) -> Any:
            return spec.get(key) if isinstance(spec, dict) else getattr(spec, key, None)

        # a bipolar grid (-1/+1) is signed 1-bit codes to the golden model and one unsigned stored bit b
        # (for 2b - 1) in interface.json: both name the same grid, so signedness is not compared there
        keys = ("bits", "scale_exp", "bipolar") if get("bipolar") and iface.input.bipolar else \
            ("bits", "signed", "scale_exp", "bipolar")
        for key in keys:
            v = get(key)
            v = scalar_exp(v) if key == "scale_exp" else v
            mine = getattr(iface.input, key)
            if v is not None and mine is not None and v != mine:
                checks.append(f"input.{key}: interface.json says {mine}, the golden model {v}")
    return checks


def _expected_outputs(ref: Reference, x: np.ndarray, iface: Interface) -> tuple[np.ndarray, Any, float]:
    """The reference's output codes for ``x`` (N, fields), checked to be integer codes of the declared
    output width; returns (codes, their scale exponent, seconds)."""
    n = len(x)
    t0 = time.perf_counter()
    expected, out_se = ref.run(x.reshape(n, *iface.input.shape))
    golden_s = time.perf_counter() - t0
    expected = np.asarray(expected).reshape(n, -1)
    if expected.shape[1] != iface.output.fields:
        raise StageInputError(f"the reference gives {expected.shape[1]} outputs per vector, interface.json "
                              f"output has {iface.output.fields} fields")
    if not np.issubdtype(expected.dtype, np.integer):
        if not np.array_equal(expected, np.rint(expected)):
            raise StageInputError("the reference returned non-integer output codes")
    return expected.astype(np.int64), out_se, golden_s


def _output_checks(iface: Interface, expected: np.ndarray, out_se: Any) -> tuple[dict[str, Any], list[str]]:
    """The output scale (declared vs. golden) and the checks on it and on the range of the expected codes."""
    checks: list[str] = []
    scale = {"declared": iface.output.scale_exp, "golden": out_se,
             "ok": out_se is None or iface.output.scale_exp is None or out_se == iface.output.scale_exp}
    if not scale["ok"]:
        checks.append(f"output.scale_exp: interface.json says {iface.output.scale_exp}, the golden model {out_se}")
    o = iface.output
    out_of_range = int(((expected < o.code_min) | (expected > o.code_max)).any(axis=1).sum())
    if out_of_range:
        checks.append(f"{out_of_range} expected outputs do not fit the {o.bits}-bit "
                      f"{'signed' if o.signed else 'unsigned'} output fields")
    return scale, checks


def _gate_netlist(iface: Interface, work: Path, gate_target: str) -> tuple[Interface, dict[str, Any], float]:
    """Synthesize the gate-level netlist: (its interface, its summary, seconds)."""
    from codesign.verify.gate import synthesize

    t2 = time.perf_counter()
    gn = synthesize(iface, work.parent / "gate", gate_target)
    return gn.iface, gn.summary(), round(time.perf_counter() - t2, 3)


class _Comparison:
    """Simulated vs. expected outputs, per vector."""

    def __init__(self, r: SimResult, expected: np.ndarray, fields: int):
        t1 = time.perf_counter()
        n = len(expected)
        self.m = m = min(len(r.got), n)  # outputs that came back
        self.bad = np.ones(n, bool)  # mismatched, missing or with x/z bits
        self.fields_bad = np.full(n, fields)
        if m:
            diff = r.got[:m] != expected[:m]
            self.fields_bad[:m] = np.where(r.unknown[:m], fields, diff.sum(axis=1))
            self.bad[:m] = diff.any(axis=1) | r.unknown[:m]
        self.idx = np.nonzero(self.bad)[0]
        self.seconds = time.perf_counter() - t1


def _sim_checks(r: SimResult, iface: Interface, n: int, lat: dict[str, Any], ii: dict[str, Any]) -> list[str]:
    """Checks on the simulation beyond the output values: timing, testbench status, protocol, deadlock."""
    checks: list[str] = []
    if not lat["ok"]:
        checks.append(f"latency: interface.json says {iface.latency_cycles} cycles, measured "
                      f"{lat['measured_min']}..{lat['measured_max']}")
    if not ii["ok"]:
        checks.append(f"ii: interface.json says {iface.ii}, measured up to {ii['measured_max']}")
    checks += _status_checks(r, n)
    proto = r.status.get("proto_err", 0)
    if proto:
        checks.append(f"output AXI-Stream protocol: {proto} violations "
                      "(tvalid dropped or tdata changed while stalled)")
    if r.status.get("timeout"):
        checks.append(f"simulation stopped after {r.status.get('out', len(r.got))} of {n} outputs: "
                      "no output for too long (deadlock?)")
    return checks


def _result(r: SimResult, cmp: _Comparison, *, simulator: str, style: str, gate_target: str | None,
            gate_info: dict[str, Any] | None, iface: Interface, ref: Reference, x: np.ndarray, expected: np.ndarray,
            kinds: np.ndarray, max_report: int, scale: dict[str, Any], lat: dict[str, Any], ii: dict[str, Any],
            backpressure: bool, stall_from: int, stim_info: dict[str, Any], golden_s: float, synth_s: float | None,
            checks: list[str]) -> dict[str, Any]:
    """verify()'s result dict (keys in sim/README.md), before localization, waves and the total time."""
    n, m, bad = len(x), cmp.m, cmp.bad
    return {
        "simulator": simulator,
        "style": style,
        "hdl_clock": bool(r.build.hdl_clock) if style == "stream" else False,
        "level": "gate" if gate_target else "rtl",
        "gate": gate_info,
        "top": iface.top,
        "reference": ref.name,
        "vectors": n,
        "vectors_by_kind": {k: int((kinds == i).sum()) for i, k in enumerate(KINDS)},
        "mismatches": int(bad.sum()),
        "mismatches_by_kind": {k: int(bad[kinds == i].sum()) for i, k in enumerate(KINDS)},
        "mismatched_fields": int(cmp.fields_bad[bad].sum()),
        "missing_outputs": int(n - m),
        "unknown_outputs": int(r.unknown[:m].sum()) if m else 0,
        "first_mismatches": _first_mismatches(cmp.idx, x, expected, r.got, r.unknown, kinds, max_report),
        "protocol_errors": int(r.status.get("proto_err", 0)),
        "scale_exp": scale,
        "latency_cycles": lat,
        "ii": ii,
        "backpressure": {"enabled": backpressure, "from_vector": int(stall_from),
                         "gap_prob": GAP_PROB / 256 if backpressure else 0.0,
                         "backpressure_prob": BP_PROB / 256 if backpressure else 0.0,
                         "cycles": int(r.status.get("cycles", 0))},
        "stimulus": stim_info,
        "seconds": {"build": round(r.build.seconds, 3), "build_cached": r.build.cached,
                    "build_cpu": round(r.build.cpu_seconds, 3), "sim_cpu": round(r.cpu_s, 3),
                    "golden": round(golden_s, 3), "sim": round(r.run_s, 3), "sim_core": round(r.core_s, 3),
                    "compare": round(cmp.seconds, 3), "synth": synth_s,
                    "synth_cpu": gate_info["synth_cpu_s"] if gate_info else None},
        "vectors_per_s": round(n / r.run_s, 1) if r.run_s > 0 else None,
        "vectors_per_s_core": round(n / r.core_s, 1) if r.core_s > 0 else None,
        "build_dir": str(r.build.build_dir),
        "checks_failed": checks,
        "localization": None,
        "waves": None,
        "toggles": None,
    }


def _localize_mismatches(iface: Interface, ref: Reference, x: np.ndarray, cmp: _Comparison, gate_target: str | None,
                         *, simulator: str, work: Path, build_root: Path | None,
                         regenerate: Callable[[Path], Path] | None, verilator_opt: str | None) -> dict[str, Any]:
    """:func:`_localize` on the first 64 mismatched vectors."""
    sel = cmp.idx[cmp.idx < len(x)][:64]
    loc = _localize(iface, ref, x[sel], simulator=simulator, work=work, build_root=build_root,
                    regenerate=regenerate, verilator_opt=verilator_opt)
    if gate_target and loc.get("regenerated") and loc.get("rerun_output_mismatches") == 0:
        loc["note"] = ("the RTL regenerated with taps matches the golden model on these vectors, the "
                       f"{gate_target} netlist does not: a synthesis or cell-model mismatch")
    return loc


# ---- public API -------------------------------------------------------------------------------

def run_codes(rtl_dir: str | Path, x_codes: np.ndarray, *, simulator: str = "icarus", backpressure: bool = True,
              seed: int = 0, work: str | Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Stream integer input codes (N, fields) through a generated design (its ``interface.json``) and
    return ``(output codes, stats)``: stats ``latency`` / ``ii`` (measured maxima in the full-throughput
    part of the run), ``taps`` (layer name -> its debug-tap codes, when the design has taps) and ``seconds``
    (``build``, ``build_cached``, ``build_cpu``, ``sim``, ``sim_cpu``). With
    ``backpressure`` the second half of the run has random input gaps and output backpressure. The same
    testbench as :func:`verify`, without a reference: for tests and the hls4ml plugin's ``predict``."""
    iface = load_interface(rtl_dir)
    x = np.asarray(x_codes, dtype=np.int64).reshape(len(x_codes), -1)
    n = len(x)
    stall_from = n // 2 if backpressure else n
    rtl = Path(rtl_dir).resolve()
    work = Path(work) if work is not None else rtl.parent / f"{rtl.name}_sim"
    r = simulate(iface, x, simulator=simulator, stall_from=stall_from, seed=seed, work=work.resolve())
    if len(r.got) != n or (len(r.unknown) and r.unknown.any()):
        raise VerificationError(f"{rtl_dir}: the simulation returned {len(r.got)} of {n} outputs"
                                + (" (some with x/z bits)" if len(r.unknown) and r.unknown.any() else ""))
    bad = _status_checks(r, n)
    if bad:
        raise VerificationError(f"{rtl_dir}: " + "; ".join(bad))
    lat, ii = _timing(r, stall_from, iface)
    taps = {la.name: codes for (codes, _), la in zip(r.taps, iface.taps, strict=True)}
    seconds = {"build": r.build.seconds, "build_cached": r.build.cached, "build_cpu": r.build.cpu_seconds,
               "sim": r.run_s, "sim_cpu": r.cpu_s}
    return r.got, {"latency": lat["measured_max"], "ii": ii["measured_max"], "taps": taps, "status": r.status,
                   "seconds": seconds}


def verify(rtl_dir: str | Path, onnx_path: Any = None, vectors: int = 100_000, simulator: str = "verilator",
           waves: bool = False, backpressure: bool = True, test_x: np.ndarray | str | Path | None = None,
           seed: int = 0, *, style: str = "stream", out_dir: str | Path | None = None,
           build_root: str | Path | None = None, corners: bool = True, localize: bool = True,
           hdl_clock: bool | None = None, max_report: int = 10, waves_vectors: int = 2000,
           gate_level: bool | str = False, verilator_opt: str | None = None,
           regenerate: Callable[[Path], Path] | None = None) -> dict[str, Any]:
    """Simulate the RTL in ``rtl_dir`` (its ``interface.json``) and compare it with the reference.

    ``onnx_path``: ONNX model for ``GoldenModel``, a GoldenModel-like object (``run_codes``), or a
    callable ``codes -> codes``; None uses ``interface.json["onnx"]``. ``vectors``: random vectors
    on the input grid (plus ``test_x`` and corner vectors). ``backpressure``: the second half of the
    run has random input gaps and output backpressure. ``style``: ``stream`` (HDL-side wrapper,
    fast) or ``loop`` (Python drives every cycle). ``waves``: an extra run of the test set (at most
    ``waves_vectors``) dumps a waveform and counts toggles per module/layer. ``gate_level``: simulate
    the yosys netlist instead of the RTL: ``"generic"`` (or True: ``synth`` + simcells.v), ``"ecp5"``
    (``synth_ecp5`` + the vendor cell models) or ``"ice40"`` (``synth_ice40 -dsp``; see
    :mod:`codesign.verify.gate`). ``verilator_opt``: make variables for Verilator's C++ compile (config
    ``verify.verilator_opt``; default :data:`codesign.verify.sim.VERILATOR_OPT`). Writes ``verify.json``
    into ``out_dir`` when given. Returns the result dict (keys in sim/README.md); it does not raise on mismatches.
    """
    t_start = time.perf_counter()
    iface = load_interface(rtl_dir)
    sim.check_available(simulator)
    from codesign.verify.gate import normalize_target

    gate_target = normalize_target(gate_level)
    ref = make_reference(onnx_path, iface)
    test_x = _core_inputs(test_x, ref)
    spec = ref.input_spec
    checks = _input_checks(iface, spec)
    x, kinds, stim_info = make_stimulus(iface.input, vectors, test_x, seed, corners=corners, spec=spec)
    n = len(x)
    if n == 0:
        raise StageInputError("verify: no vectors to simulate (vectors=0, no test_x, no corners)")
    expected, out_se, golden_s = _expected_outputs(ref, x, iface)
    scale, out_checks = _output_checks(iface, expected, out_se)
    checks += out_checks

    stall_from = n // 2 if backpressure else n
    tmp = None
    if out_dir is not None:
        work = Path(out_dir) / "sim"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="codesign-verify-"))
        work = tmp / "sim"
    broot = Path(build_root) if build_root else None
    synth_s = None
    gate_info: dict[str, Any] | None = None
    if gate_target:
        iface, gate_info, synth_s = _gate_netlist(iface, work, gate_target)
    try:
        r = simulate(iface, x, simulator=simulator, style=style, stall_from=stall_from, seed=seed,
                     hdl_clock=hdl_clock, work=work, build_root=broot, with_taps=False, verilator_opt=verilator_opt)
        cmp = _Comparison(r, expected, iface.output.fields)
        lat, ii = _timing(r, stall_from, iface)
        checks += _sim_checks(r, iface, n, lat, ii)
        result = _result(r, cmp, simulator=simulator, style=style, gate_target=gate_target, gate_info=gate_info,
                         iface=iface, ref=ref, x=x, expected=expected, kinds=kinds, max_report=max_report,
                         scale=scale, lat=lat, ii=ii, backpressure=backpressure, stall_from=stall_from,
                         stim_info=stim_info, golden_s=golden_s, synth_s=synth_s, checks=checks)
        if len(cmp.idx) and localize:
            result["localization"] = _localize_mismatches(iface, ref, x, cmp, gate_target, simulator=simulator,
                                                          work=work, build_root=broot, regenerate=regenerate,
                                                          verilator_opt=verilator_opt)
        if waves:
            result["waves"], result["toggles"] = _waves(iface, x, kinds, simulator=simulator, work=work / "waves",
                                                        build_root=broot, max_vectors=waves_vectors,
                                                        verilator_opt=verilator_opt)
    finally:
        if tmp is not None and not waves:
            shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    result["ok"] = result["mismatches"] == 0 and not checks
    if out_dir is not None:
        from codesign.run import atomic_write_json

        atomic_write_json(Path(out_dir) / "verify.json", result)
    return result


def summary(res: dict[str, Any]) -> str:
    s = res["seconds"]
    gate = res.get("gate") or {}
    where = f" ({gate.get('target')} netlist)" if res.get("level") == "gate" else ""
    lines = [f"{res['simulator']}/{res['style']}{where}: {res['vectors']:,} vectors {res['vectors_by_kind']}, "
             f"{res['mismatches']} mismatches, {res['vectors_per_s'] or 0:,.0f} vectors/s "
             f"(build {s['build']:.1f} s{' cached' if s['build_cached'] else ''}, sim {s['sim']:.2f} s)"]
    lines += [f"  check failed: {c}" for c in res["checks_failed"]]
    loc = res.get("localization")
    if loc and loc.get("first_bad_layer"):
        lines.append(f"  first layer that differs: {loc['first_bad_layer']}")
    return "\n".join(lines)


def run_stage(rd: Any, cfg: Any) -> dict[str, Any]:
    """Flow stage: rtl/interface.json + export/model.onnx + export/test_x.npy -> verify/verify.json."""
    rtl = rd.require("rtl/interface.json", "rtl").parent
    onnx = rd.require("export/model.onnx", "export")
    tx = rd.path("export", "test_x.npy")
    test_x = np.load(tx) if tx.exists() else None
    vc = cfg.verify
    out = rd.stage_dir("verify")
    regen = _regenerate_hook(rd, cfg)
    res = verify(rtl, onnx, vectors=vc.random_vectors, simulator=vc.simulator, waves=vc.waves,
                 backpressure=vc.backpressure, test_x=test_x, seed=vc.seed, out_dir=out,
                 regenerate=regen, style=vc.style, gate_level=vc.gate_level, verilator_opt=vc.verilator_opt)
    rd.add(out / "verify.json", "verify")
    fig = {"simulator": res["simulator"], "vectors": res["vectors"], "mismatches": res["mismatches"],
           "vectors_per_s": res["vectors_per_s"], "latency_cycles": res["latency_cycles"]["measured_max"],
           "ii": res["ii"]["measured_max"], "checks_failed": len(res["checks_failed"])}
    rd.record("verify", fig)
    if res["mismatches"] > 0:
        loc = res.get("localization") or {}
        where = f"; first layer that differs: {loc['first_bad_layer']}" if loc.get("first_bad_layer") else ""
        raise VerificationError(f"RTL vs golden: {res['mismatches']} of {res['vectors']} vectors mismatch"
                                f"{where} (details in {out / 'verify.json'})")
    if res["checks_failed"]:
        raise VerificationError("RTL vs interface.json: " + "; ".join(res["checks_failed"]))
    return fig


def _regenerate_hook(rd: Any, cfg: Any) -> Callable[[Path], Path]:
    """A callable that regenerates the run's design, the same config, with debug taps."""
    from codesign.rtl import generate

    def regen(dest: Path) -> Path:
        generate(rd.path("export", "model.onnx"), dest, cfg.rtl, debug_taps=True, name=cfg.name)
        return dest

    return regen
