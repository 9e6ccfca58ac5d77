"""The page's HTML is well-formed: every element closed, in order, so no view sits inside another (the Duplicates
view once did, inside the Map view, and was hidden with it). No browser needed; tests/test_browser.py drives it."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from lookalike.server.app import DOCS_PAGE, STATIC

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Nesting(HTMLParser):
    """Tracks open non-void elements; records every unclosed, stray or misnested tag and each view's parents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None, int]] = []
        self.problems: list[str] = []
        self.parents: dict[str, list[str]] = {}
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident:
            self.ids.append(ident)
            self.parents[ident] = [i for _, i, _ in self.stack if i]
        if "style" in dict(attrs):
            self.problems.append(f"line {self.getpos()[0]}: <{tag}> has a style attribute (the CSP refuses it)")
        if tag not in VOID:
            self.stack.append((tag, ident, self.getpos()[0]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.problems.append(f"line {self.getpos()[0]}: <{tag}/> is not a void element")
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        line = self.getpos()[0]
        if tag in VOID:
            self.problems.append(f"line {line}: </{tag}> closes a void element")
        elif not self.stack:
            self.problems.append(f"line {line}: </{tag}> closes nothing")
        elif self.stack[-1][0] != tag:
            open_tag, ident, opened = self.stack[-1]
            name = f"<{open_tag}{f' id={ident}' if ident else ''}> (line {opened})"
            self.problems.append(f"line {line}: </{tag}> while {name} is still open")
            if any(t == tag for t, _, _ in self.stack):  # recover: close up to the matching element
                while self.stack[-1][0] != tag:
                    self.stack.pop()
                self.stack.pop()
        else:
            self.stack.pop()

    def close(self) -> None:
        super().close()
        for tag, ident, line in self.stack:
            self.problems.append(f"<{tag}{f' id={ident}' if ident else ''}> opened on line {line} is never closed")


def nesting(html: str) -> Nesting:
    parser = Nesting()
    parser.feed(html)
    parser.close()
    return parser


def test_the_page_is_well_formed() -> None:
    page = nesting((STATIC / "index.html").read_text())
    assert page.problems == []
    assert len(page.ids) == len(set(page.ids)), "ids are unique"


def test_each_view_is_a_child_of_main_only() -> None:
    page = nesting((STATIC / "index.html").read_text())
    views = [i for i in page.ids if i.startswith("view-")]
    assert views == ["view-login", "view-search", "view-clusters", "view-map", "view-duplicates"]
    for view in views:
        assert page.parents[view] == [], f"{view} sits inside {page.parents[view]}"


def test_the_docs_page_is_well_formed() -> None:
    assert nesting(DOCS_PAGE).problems == []


@pytest.mark.parametrize(
    ("html", "problem"),
    [
        ("<main><section id=a><div></div><section id=b></section></main>", "</main> while <section id=a>"),
        ("<div><span></div>", "</div> while <span>"),
        ("<div><p>text</div></p>", "</div> while <p>"),
        ("<section><div></div>", "never closed"),
        ("<div></div></span>", "closes nothing"),
        ("<p style='color: red'>x</p>", "style attribute"),
    ],
)
def test_the_checker_finds_each_fault(html: str, problem: str) -> None:
    problems = nesting(html).problems
    assert any(problem in p for p in problems), problems


def test_scripts_build_no_style_attribute() -> None:
    """A style attribute set from a script is refused by the CSP too (``style.width = ...`` is allowed)."""
    for js in sorted(Path(STATIC).glob("*.js")):
        text = js.read_text()
        for bad in ('setAttribute("style"', "setAttribute('style'", "style: `", 'style: "', "style: '"):
            assert bad not in text, f"{js.name}: {bad}"
