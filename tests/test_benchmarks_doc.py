"""BENCHMARKS.md keeps its shape (one section per bench, in the fixed order, with a current table of contents), and
every link into it from the docs lands on a heading."""

from __future__ import annotations

import re
from pathlib import Path

from bench.report import PARTS, layout, slug

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "BENCHMARKS.md"


def test_benchmarks_is_laid_out():
    text = BENCH.read_text()
    assert layout(text) == text, "BENCHMARKS.md is out of order or its contents are stale: run python -m bench.report"


def test_every_section_is_placed():
    named = {n for _, sections in PARTS for n, _ in sections}
    written = set(re.findall(r"<!-- BEGIN ([\w.-]+) -->", BENCH.read_text())) - {"toc"}
    assert written <= named, f"sections no part of bench/report.py PARTS places: {sorted(written - named)}"


def test_layout_orders_titles_and_strips_issue_numbers():
    text = (
        "<!-- BEGIN classify -->\n## Classification (issue 4)\n\n### Sub (issues 2, 24)\nrow\n<!-- END classify -->\n\n"
        "<!-- BEGIN descriptors -->\n### whatever\nbody\n<!-- END descriptors -->\n"
    )
    out = layout(text)
    assert out.index("BEGIN descriptors") < out.index("BEGIN classify")
    assert "## Room classification: kNN, linear probe, MLP" in out and "### Sub\n" in out
    assert "issue" not in out.split("<!-- END toc -->")[1]
    assert layout(out) == out


def test_doc_links_into_benchmarks_resolve():
    anchors = {slug(h) for h in re.findall(r"^#{1,6} (.+)$", BENCH.read_text(), re.M)}
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for anchor in re.findall(r"BENCHMARKS\.md#([\w-]+)", doc.read_text()):
            if anchor not in anchors:
                broken.append(f"{doc.name}: #{anchor}")
    assert not broken, f"links to headings BENCHMARKS.md does not have: {broken}"
