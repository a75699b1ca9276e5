"""Every figure in README.md comes from a bench or flow output (bench/audit.py), and the audit itself catches
what it should."""

from __future__ import annotations

from bench import audit


def test_readme_figures_have_a_source() -> None:
    bad = audit.audit(audit.README.read_text(), audit.sources())
    assert bad == [], "README figures no bench or flow output contains (python -m bench.audit):\n" + "\n".join(
        f"README.md:{ln}: {num}  {line[:100]}" for ln, num, line in bad)


def test_audit_flags_a_figure_without_a_source() -> None:
    srcs = {"docs/benchmarks.md#x": {34484.0, 0.97214, 78.31}}
    text = ("| a | 34,484 LUT4, 97.2% and 78.3 MHz |\n"
            "| b | 12,345 LUT4 and 61.2 MHz |\n"
            "<!-- bench:demo -->\n| c | 55,555 |\n<!-- /bench:demo -->\n"
            "784-64-64-64-10 layers, released 2026-12-03, `make test 999.9` in code, version 1.2.3\n")
    bad = audit.audit(text, srcs)
    assert [(ln, num) for ln, num, _ in bad] == [(2, "12,345"), (2, "61.2")]


def test_percent_matches_a_fraction_at_the_written_precision_only() -> None:
    assert audit.matches("97.2", True, {0.97214})
    assert audit.matches("97.21", True, {0.97214})
    assert not audit.matches("97.3", True, {0.97214})
    assert not audit.matches("97.2", False, {0.97214})
    assert audit.matches("1,258", False, {1258.0})
    assert not audit.matches("1,259", False, {1258.0})


def test_kept_results_hold_no_path_of_this_machine() -> None:
    from bench import results

    assert results._scrub({"a": [str(audit.ROOT / "examples" / "net.py") + ":MLP", "/tmp/x/run/board.bit", "rel"]}) \
        == {"a": ["examples/net.py:MLP", "board.bit", "rel"]}
    for p in audit.RESULTS.glob("*.json"):
        assert '"/' not in p.read_text(), f"{p.name} holds an absolute path"


def test_docs_figures_have_a_source() -> None:
    """The hand-written parts of every docs/*.md: no figure without a source (python -m bench.audit --docs)."""
    found = audit.audit_docs(audit.sources())
    assert len(found) >= 9, sorted(found)
    bad = [f"{name}:{ln}: {num}  {line[:100]}" for name, rows in found.items() for ln, num, line in rows]
    assert bad == [], "figures no bench or flow output contains (python -m bench.audit --docs):\n" + "\n".join(bad)


def test_from_file_figures_must_occur_in_the_file() -> None:
    srcs = {"docs/benchmarks.md#x": {0.4, 9.9}}
    text = ("<!-- from-file: codesign/energy_tables/horowitz45nm.yaml -->\n"
            "an 8-bit add 0.03 pJ, an 8x8 multiply 0.2 pJ, a ROM bit 0.16 pJ\n"
            "an fp16 add 0.4 pJ\n"          # in another source, not in the file: flagged
            "<!-- /from-file -->\n"
            "outside the block 0.4 and 0.16\n"   # 0.16 only in the file: the block is no source
            "<!-- from-file: codesign/energy_tables/no_such.yaml -->\n1.5 pJ\n<!-- /from-file -->\n")
    bad = audit.audit(text, srcs)
    assert [(ln, num) for ln, num, _ in bad] == [(3, "0.4"), (5, "0.16"), (7, "1.5")]
