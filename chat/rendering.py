"""Agent replies as safe HTML: Markdown by markdown-it-py, sanitized by nh3.

Replies are untrusted (a model repeats whatever it is given), so raw HTML in
the Markdown source is escaped by the parser and the parser's output is then
sanitized against a small allow-list: even a parser bug cannot let a script,
an event handler or a `javascript:` link through. Images become links, so a
reply cannot make the reader's browser fetch a remote URL by itself.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

ALLOWED_TAGS = frozenset(
    {
        "a",
        "blockquote",
        "br",
        "code",
        "del",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "strong",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}
# Table column alignment is the one style markdown-it writes.
ALLOWED_STYLE_PROPERTIES = frozenset({"text-align"})
ALLOWED_URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"
# Longer texts are rendered too; this only bounds the parser's work per call.
MAX_RENDER_CHARS = 200_000


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # CommonMark with GitHub-style tables and strikethrough; `html: False`
    # makes raw HTML in the source plain text.
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
        ["table", "strikethrough"]
    )
    parser.add_render_rule("image", _image_as_link)
    return parser


def _image_as_link(renderer, tokens, index, options, env) -> str:
    token = tokens[index]
    source = token.attrGet("src") or ""
    label = renderer.renderInlineAsText(token.children or [], options, env) or source
    return f'<a href="{escapeHtml(str(source))}">{escapeHtml(label)}</a>'


def markdown_to_safe_html(text: str) -> str:
    """Render a reply's Markdown to HTML that is safe to insert into the page."""
    if not text:
        return ""
    html = _parser().render(text[:MAX_RENDER_CHARS])
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(ALLOWED_URL_SCHEMES),
        filter_style_properties=set(ALLOWED_STYLE_PROPERTIES),
        link_rel=LINK_REL,
        strip_comments=True,
    )
