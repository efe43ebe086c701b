"""Markdown of prompts, responses and guidelines as safe HTML for the annotator page.

markdown-it (CommonMark) with raw HTML off — any tag in the text is shown as text, never parsed — and with
images, links and autolinks off, so nothing on the page loads or points anywhere outside the service: model
output may be hostile. Code blocks and inline code keep their text, escaped. A conversation is rendered message by
message under its role.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from html import escape
from pathlib import Path

from markdown_it import MarkdownIt

from system.api import Guidelines
from system.errors import ConfigError
from system.types import Text


@lru_cache(maxsize=1)
def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).disable(["image", "link", "autolink"])


def render_markdown(text: str) -> str:
    """``text`` (Markdown) as HTML with no raw HTML, images or links."""
    return _renderer().render(text)


def render_text(text: Text) -> str:
    """A prompt or response: Markdown, or a conversation as one section per message headed by its role."""
    if isinstance(text, str):
        return render_markdown(text)
    return "".join(f'<section class="message"><h3>{escape(message.get("role", ""))}</h3>'
                   f'{render_markdown(message.get("content", ""))}</section>' for message in text)


def load_guidelines(path: str | None) -> Guidelines:
    """The guidelines file at ``path`` rendered, with the SHA-256 of its bytes; empty ones when ``path`` is None.

    Raises:
        ConfigError: naming ``oracle.human.guidelines_path`` when the file cannot be read as UTF-8 text.
    """
    if path is None:
        return Guidelines(digest="", html="")
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"oracle.human.guidelines_path: {path}: cannot read UTF-8 text ({exc})") from None
    return Guidelines(digest=hashlib.sha256(data).hexdigest(), html=render_markdown(text))
