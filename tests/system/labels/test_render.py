"""Markdown for the annotator page: hostile model output becomes inert text; no tag or attribute that could run,
load or link anything survives (checked with Python's own HTML parser, not by string search)."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from system.errors import ConfigError
from system.labels.render import load_guidelines, render_text

SAFE_TAGS = {"p", "em", "strong", "code", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote",
             "hr", "br", "section"}
SAFE_ATTRIBUTES = {("code", "class"), ("section", "class"), ("ol", "start")}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def tags_of(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = Tags()
    parser.feed(html)
    return parser.found


ATTACKS = [
    "<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "[click](javascript:alert(1))",
    "![pixel](https://tracker.example/p.png)", "<https://phish.example>", '<a href="https://x.example">x</a>',
    "<iframe src=//evil.example></iframe>", '<svg onload="alert(1)">', "```\n</code></pre><script>x</script>\n```",
    '[x](data:text/html;base64,PHNjcmlwdD4=)', "<style>body{display:none}</style>",
]


@pytest.mark.parametrize("text", ATTACKS)
def test_hostile_text_renders_to_inert_tags_only(text: str) -> None:
    for tag, attrs in tags_of(render_text(text)):
        assert tag in SAFE_TAGS, (text, tag)
        assert all((tag, name) in SAFE_ATTRIBUTES and not (value or "").startswith("javascript")
                   for name, value in attrs), (text, tag, attrs)


def test_markdown_renders_and_code_keeps_its_text() -> None:
    html = render_text("**bold** and `a<b`\n\n```python\nif a < b:\n    pass\n```")
    assert [tag for tag, _ in tags_of(html)] == ["p", "strong", "code", "pre", "code"]
    assert "a&lt;b" in html and "if a &lt; b:\n    pass" in html


def test_a_conversation_renders_message_by_message_under_its_role() -> None:
    html = render_text([{"role": "user<b>", "content": "hi *there*"}, {"role": "assistant", "content": "ok"}])
    assert [tag for tag, _ in tags_of(html)] == ["section", "h3", "p", "em", "section", "h3", "p"]
    assert "user&lt;b&gt;" in html


def test_guidelines_are_rendered_with_the_digest_of_their_file(tmp_path: Path) -> None:
    path = tmp_path / "guidelines.md"
    path.write_text("# Prefer helpful answers\n\nA polite refusal beats a <b>rude</b> answer.\n", encoding="utf-8")
    guidelines = load_guidelines(str(path))
    assert guidelines.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [tag for tag, _ in tags_of(guidelines.html)] == ["h1", "p"] and "&lt;b&gt;rude" in guidelines.html
    assert load_guidelines(None).digest == "" and load_guidelines(None).html == ""
    with pytest.raises(ConfigError, match="oracle.human.guidelines_path: .*missing.md: cannot read"):
        load_guidelines(str(tmp_path / "missing.md"))
