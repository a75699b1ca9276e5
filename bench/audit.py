"""``python -m bench.audit``: every figure in README.md must come from a bench or flow output.

A *figure* is a number in README's prose and tables (not in code blocks): one with a decimal point, a
percentage, or an integer of 100 and above (years, versions and numbers that are part of a name such as
``ECP5-85F`` or ``SB_MAC16`` are not figures). Each must occur in a *source*:

- a section written by a bench (``<!-- bench:KEY -->`` ... ``<!-- /bench:KEY -->``) in docs/*.md or in
  README.md itself (README's demo table is such a section, written by ``python -m bench flow``);
- a bench's printed output pasted into a doc between ``<!-- printed-by: COMMAND -->`` and
  ``<!-- /printed-by -->`` (the command that printed it, e.g. a bench's ``--tables`` reprint);
- a flow output kept in the repository: ``docs/results/*.json`` (a run's ``report.json`` and the command
  that made it, written by ``python -m bench.results``);
- a figure in docs/*.md that is not inside a generated section counts only in ``--loose`` mode (hand-written
  docs say where their figures come from, but nothing re-checks them).

Figures that are inputs rather than measurements (the energy model's pJ-per-operation constants cited from the
literature) stand between ``<!-- from-file: PATH -->`` and ``<!-- /from-file -->``, PATH relative to the
repository root (e.g. ``codesign/energy_tables/horowitz45nm.yaml``): each figure of such a block must occur
in that file (at the written precision), whatever the other sources hold; the block is not a source itself.

A README figure matches a source number when it equals it at the README's precision (``97.2%`` matches
``0.97214`` and ``97.21``; ``34,484`` matches ``34484``). Figures that are settings rather than
measurements (a baud rate, a clock asked for) are listed in ``ALLOWED`` with the reason.

``--docs`` applies the same rule to the hand-written parts of docs/*.md (outside bench sections and printed-by
blocks; a ``-notes`` section is hand-written): a figure there must occur in a source too.

Exit 1 and a list of the unsourced figures (line number and context) when there is any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"

# settings and targets, not measurements: (pattern around the figure, why)
ALLOWED = (
    (r"UART 115200|115200 8N1", "the board UART's baud rate (a setting)"),
    (r"\b500 fuzzed graphs", "the size of the slow fuzz test (a setting)"),
    (r"missing for 200 MHz", "the clock target of the deep-pipelining work (a goal, not a result)"),
)

_NUM = re.compile(r"(?<![\w.\-/=<])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(%?)(?![\w.]*\d)(?![A-Za-z_])")
_GEN = re.compile(r"<!-- bench:([\w-]+) -->(.*?)<!-- /bench:\1 -->", re.S)
# a bench's printed output pasted into a hand-written doc, with the command that printed it
_PRINTED = re.compile(r"<!-- printed-by: (.+?) -->(.*?)<!-- /printed-by -->", re.S)
# inputs quoted from a file of the repository (an energy table): checked against that file only
_FROM_FILE = re.compile(r"<!-- from-file: (\S+?) -->(.*?)<!-- /from-file -->", re.S)
_FENCE = re.compile(r"```.*?```", re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\([^)]*\)")
_DATE = re.compile(r"\b20\d\d-\d\d-\d\d(?: \d\d:\d\d(?: UTC)?)?\b")
_VERSION = re.compile(r"\b\d+\.\d+\.\d+\w*")
_LAYERS = re.compile(r"\b\d+(?:-\d+){2,}\b")  # layer widths such as 784-64-64-64-10: a shape, not a figure


def _strip(text: str) -> str:
    """Blank out what holds no figure (code, links, dates, versions), keeping line numbers."""
    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    for rx in (_FENCE, _CODE, _LINK, _DATE, _VERSION, _LAYERS):
        text = rx.sub(blank, text)
    return text


def figures(text: str) -> list[tuple[int, str, bool, str]]:
    """-> (line number, number as written, percent, line) for each figure of ``text``."""
    out = []
    raw_lines = text.splitlines()
    for i, line in enumerate(_strip(text).splitlines()):
        for m in _NUM.finditer(line):
            num, pct = m.group(1), bool(m.group(2))
            v = float(num.replace(",", ""))
            if "." not in num and not pct and v < 100:
                continue
            if "." not in num and 1990 <= v <= 2100 and "," not in num:
                continue  # a year
            out.append((i + 1, num, pct, raw_lines[i].strip()))
    return out


def _numbers(text: str) -> set[float]:
    vals = set()
    for m in re.finditer(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:e-?\d+)?", text):
        try:
            vals.add(float(m.group(0).replace(",", "")))
        except ValueError:
            pass
    return vals


def _json_numbers(obj) -> set[float]:
    vals: set[float] = set()
    if isinstance(obj, bool):
        return vals
    if isinstance(obj, (int, float)):
        vals.add(abs(float(obj)))  # signs are not compared: README writes a drop as "-0.37" or "0.37 points"
    elif isinstance(obj, dict):
        for v in obj.values():
            vals |= _json_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            vals |= _json_numbers(v)
    elif isinstance(obj, str):
        vals |= _numbers(obj)
    return vals


def sources(loose: bool = False) -> dict[str, set[float]]:
    """Source name -> the numbers it holds."""
    src: dict[str, set[float]] = {}
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        text = doc.read_text()
        for m in _GEN.finditer(text):
            if m.group(1).endswith("-notes"):
                continue  # hand-written notes kept between markers: not a source
            src[f"{doc.relative_to(ROOT)}#{m.group(1)}"] = _numbers(m.group(2))
        for m in _PRINTED.finditer(text):
            src[f"{doc.relative_to(ROOT)}: printed by {m.group(1)}"] = _numbers(m.group(2))
        if loose and doc != README:
            src[f"{doc.relative_to(ROOT)} (hand-written)"] = _numbers(_GEN.sub("", text))
    for res in sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []:
        src[str(res.relative_to(ROOT))] = _json_numbers(json.loads(res.read_text()))
    return src


def matches(num: str, pct: bool, values: set[float]) -> bool:
    """``num`` as written equals a source value at the written precision; a percentage may also be a
    fraction (97.2% == 0.972 at 3 decimals)."""
    v = float(num.replace(",", ""))
    dec = len(num.split(".")[1]) if "." in num else 0
    cands = [(v, dec)] + ([(v / 100, dec + 2)] if pct else [])
    return any(abs(s - c) <= 0.5 * 10 ** -d + 1e-12 for s in values for c, d in cands)


def file_numbers(path: str) -> set[float]:
    """The numbers of a repository file named by a from-file block (empty if it is missing or outside the
    repository, so every figure of the block is then reported)."""
    f = (ROOT / path).resolve()
    if not f.is_file() or ROOT not in f.parents:
        return set()
    return _numbers(f.read_text())


def audit(text: str, srcs: dict[str, set[float]]) -> list[tuple[int, str, str]]:
    """-> unsourced figures as (line, figure, line text). A figure on a line of a from-file block is checked
    against that file's numbers only."""
    everything = set().union(*srcs.values()) if srcs else set()
    bad = []
    gen_spans = [(m.start(), m.end()) for m in _GEN.finditer(text)]
    from_file = [(text.count("\n", 0, m.start()) + 1, text.count("\n", 0, m.end()) + 1, file_numbers(m.group(1)))
                 for m in _FROM_FILE.finditer(text)]
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    for ln, num, pct, line in figures(text):
        pos = starts[ln - 1]
        if any(a <= pos < b for a, b in gen_spans):
            continue  # inside a generated section of README itself
        if any(num in m.group(0) for rx, _ in ALLOWED for m in re.finditer(rx, line)):
            continue
        quoted = [vals for a, b, vals in from_file if a <= ln <= b]
        if not matches(num, pct, quoted[0] if quoted else everything):
            bad.append((ln, num + ("%" if pct else ""), line))
    return bad


def audit_docs(srcs: dict[str, set[float]]) -> dict[str, list[tuple[int, str, str]]]:
    """The same check on the hand-written parts of docs/*.md (generated and printed-by blocks left out)."""
    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    out = {}
    for doc in sorted(DOCS.glob("*.md")):
        text = _PRINTED.sub(blank, _GEN.sub(blank, doc.read_text()))
        out[str(doc.relative_to(ROOT))] = audit(text, srcs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--loose", action="store_true", help="also accept figures found in hand-written docs")
    ap.add_argument("--docs", action="store_true",
                    help="also check the hand-written parts of docs/*.md (exit 1 if any figure there has no "
                         "source; tests/test_docs.py enforces it)")
    a = ap.parse_args(argv)
    n_docs = 0
    if a.docs:
        for name, bad in audit_docs(sources()).items():
            for ln, num, line in bad:
                print(f"{name}:{ln}: {num}  ({line[:110]})")
            print(f"{name}: {len(bad)} figures without a bench or flow source")
            n_docs += len(bad)
    bad = audit(README.read_text(), sources(a.loose))
    for ln, num, line in bad:
        print(f"README.md:{ln}: {num}  ({line[:110]})")
    n = len(figures(README.read_text()))
    print(f"{n} figures in README.md, {len(bad)} without a bench or flow source"
          + (" (hand-written docs accepted)" if a.loose else ""))
    return 1 if bad or n_docs else 0


if __name__ == "__main__":
    sys.exit(main())
