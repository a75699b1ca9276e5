"""``python -m bench.results``: keep a flow run's measured figures in the repository, with the command that
made them, so README's figures have a source that outlives the run directory.

    python -m bench.results save NAME RUN_DIR --command "codesign flow digits_mlp_up5k --out runs/up5k"
    python -m bench.results ci NAME LOG --command ".ci/run (fresh clone)"
    python -m bench.results list

``save`` writes ``docs/results/NAME.json``: the command, when the run's ``report.json`` was written, the
run's config, its ``report.json`` and each FPGA build's ``fpga.json`` summary. ``ci`` keeps the last
pytest summary line of a test log (passed / skipped / failed counts, wall time) and the script's total.
``python -m bench.audit`` accepts a README figure found in any of these files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

from bench.audit import RESULTS, ROOT

_FPGA_KEYS = ("target", "board", "clock_mhz", "seed", "placement", "placer", "router", "resources", "utilisation",
              "fmax", "timing_met", "bitstream", "bitstream_bytes", "steps", "tools")


def _scrub(obj):
    """No path of this machine in the repository: a path inside the project becomes relative to it, any other
    absolute path its file name."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        path, _, suffix = obj.partition(":")  # model.module is "file.py:Class"
        p = Path(path)
        rel = str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name
        return rel + (f":{suffix}" if suffix else "")
    return obj


def _write(name: str, data: dict) -> Path:
    data = _scrub(data)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(out)
    return out


def _when(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def save(name: str, run: Path, command: str) -> Path:
    rep, iface = run / "report.json", run / "interface.json"
    if rep.is_file():
        data: dict = {"command": command, "measured": _when(rep), "report": json.loads(rep.read_text())}
    elif iface.is_file():  # a folder of `codesign rtl MODEL.onnx --out DIR` (+ DIR_verify, DIR_fpga)
        full = json.loads(iface.read_text())
        data = {"command": command, "measured": _when(iface),
                "rtl": {k: full[k] for k in ("top", "latency_cycles", "ii", "strategy", "reuse") if k in full}}
        ver = run.parent / f"{run.name}_verify" / "verify.json"
        if ver.is_file():
            v = json.loads(ver.read_text())
            data["verify"] = {k: v[k] for k in ("simulator", "vectors", "mismatches", "ok", "seconds",
                                                "vectors_per_s", "checks_failed") if k in v}
            data["measured"] = _when(ver)
    else:
        raise SystemExit(f"error: {run} has no report.json or interface.json (not a run or RTL folder)")
    cfg = run / "config.yaml"
    if cfg.is_file():
        import yaml

        data["config"] = yaml.safe_load(cfg.read_text())
    # a run's builds are run/fpga/<target>/, an RTL folder's DIR_fpga/<target>/
    builds = run / "fpga" if rep.is_file() else run.parent / f"{run.name}_fpga"
    fpga = {}
    for fj in sorted(builds.glob("*/fpga.json")):
        full = json.loads(fj.read_text())
        fpga[fj.parent.name] = {k: full[k] for k in _FPGA_KEYS if k in full}
        bit = full.get("bitstream")
        if bit:  # the file name only: no path of this machine in the repository
            fpga[fj.parent.name]["bitstream"] = Path(bit).name
            if (fj.parent / Path(bit).name).exists():
                fpga[fj.parent.name]["bitstream_bytes"] = (fj.parent / Path(bit).name).stat().st_size
    if fpga:
        data["fpga"] = fpga
        ii = (data.get("report", {}).get("rtl") or data.get("rtl") or {}).get("ii")
        for f in fpga.values():  # throughput at the clock the build met: clock / II
            if ii and f.get("timing_met") and f.get("clock_mhz"):
                f["inferences_per_s_at_clock"] = round(f["clock_mhz"] * 1e6 / ii)
    return _write(name, data)


def ci(name: str, log: Path, command: str) -> Path:
    text = log.read_text(errors="replace")
    summ = [ln for ln in text.splitlines() if re.search(r"\b\d+ passed\b", ln) and " in " in ln]
    if not summ:
        raise SystemExit(f"error: no pytest summary line ('N passed ... in T') in {log}")
    line = summ[-1].strip("= ")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", line)}
    m = re.search(r" in ([\d.]+)s(?: \((\d+):(\d\d):(\d\d)\))?", line)
    data = {"command": command, "measured": _when(log), "summary": line, "counts": counts,
            "pytest_seconds": float(m.group(1)) if m else None}
    if m and m.group(2):
        data["pytest_wall"] = f"{int(m.group(2)) * 60 + int(m.group(3))}:{m.group(4)}"
    tot = re.findall(r"\.ci/run exit (\d+) after (\d+)s", text)  # fresh-check's last line
    if tot:
        data["script_exit"], data["script_seconds"] = int(tot[-1][0]), int(tot[-1][1])
    return _write(name, data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="keep a flow run's report.json (+ fpga.json) as docs/results/NAME.json")
    s.add_argument("name")
    s.add_argument("run", type=Path)
    s.add_argument("--command", required=True, help="the command that made the run, as a reader would type it")
    c = sub.add_parser("ci", help="keep the pytest summary of a test log as docs/results/NAME.json")
    c.add_argument("name")
    c.add_argument("log", type=Path)
    c.add_argument("--command", required=True)
    sub.add_parser("list", help="what docs/results holds")
    a = ap.parse_args(argv)
    if a.cmd == "save":
        print(save(a.name, a.run, a.command))
    elif a.cmd == "ci":
        print(ci(a.name, a.log, a.command))
    else:
        for p in sorted(RESULTS.glob("*.json")):
            d = json.loads(p.read_text())
            print(f"{p.name}: {d.get('measured')}  {d.get('command')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
