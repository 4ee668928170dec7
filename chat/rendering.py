"""Agent replies as safe HTML: Markdown by markdown-it-py, sanitized by nh3.

Replies are untrusted (a model repeats whatever it is given), so raw HTML in
the Markdown source is escaped by the parser and the parser's output is then
sanitized against a small allow-list: even a parser bug cannot let a script,
an event handler or a `javascript:` link through. Images become links, so a
reply cannot make the reader's browser fetch a remote URL by itself.

A fenced code block keeps its language (`class="language-python"`, the only
class the sanitizer lets through) and, after sanitizing, is highlighted by
Pygments: its escaped text is read back, tokenized and written out again as
`<span class="...">` runs styled by static/chat/highlight.css (`python -m
chat.rendering > static/chat/highlight.css` writes it). The page renders
history (chat/views.py) and live replies (POST /render/markdown/) through
this one function, so both look the same.
"""

from __future__ import annotations

import html as html_entities
import re
import sys
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

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
    "code": {"class"},  # `language-<name>` only (_keep_code_language)
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
# A fence's info string as markdown-it writes it: `class="language-<name>"`.
CODE_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")
# A fenced block in the sanitized HTML: only the sanitizer writes tags there,
# so this matches its own output, never text of the reply (escaped to &lt;).
FENCED_CODE_BLOCK = re.compile(
    r'<pre><code class="language-([A-Za-z0-9_+#.-]{1,40})">(.*?)</code></pre>',
    re.DOTALL,
)
# Code longer than this is shown unhighlighted (tokenizing is the slow part).
MAX_HIGHLIGHT_CHARS = 20_000
# Token colours chosen for the code block's dark background in both themes.
HIGHLIGHT_STYLE = "github-dark"


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


def _keep_code_language(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: `class` stays on `<code>` only as one language."""
    if attribute == "class":
        if tag == "code" and CODE_LANGUAGE_CLASS.fullmatch(value):
            return value
        return None
    return value


@lru_cache(maxsize=128)
def _lexer(language: str) -> Lexer | None:
    try:
        # stripnl=False: the block's first and last lines are code too.
        return get_lexer_by_name(language, stripnl=False)
    except ClassNotFound:
        return None


@lru_cache(maxsize=1)
def _formatter() -> HtmlFormatter:
    # nowrap: only the token spans, inside the sanitizer's own <pre><code>.
    return HtmlFormatter(nowrap=True, style=HIGHLIGHT_STYLE)


def _highlight_block(match: re.Match) -> str:
    language, escaped = match.group(1), match.group(2)
    lexer = _lexer(language.lower())
    if lexer is None or len(escaped) > MAX_HIGHLIGHT_CHARS:
        return match.group(0)
    # Pygments escapes the text again as it writes its spans (&, <, >, quotes).
    spans = highlight(html_entities.unescape(escaped), lexer, _formatter())
    opening = f'<pre class="highlight"><code class="language-{language}">'
    return f"{opening}{spans}</code></pre>"


def highlight_code_blocks(safe_html: str) -> str:
    """Highlight the fenced code blocks of sanitized HTML with Pygments."""
    if "<pre><code class=" not in safe_html:
        return safe_html
    return FENCED_CODE_BLOCK.sub(_highlight_block, safe_html)


def highlight_stylesheet() -> str:
    """The CSS for the spans highlight_code_blocks writes (static/chat/highlight.css)."""
    rules = _formatter().get_token_style_defs(".highlight")
    header = (
        "/* Code highlighting: written by `python -m chat.rendering`"
        f" (Pygments style {HIGHLIGHT_STYLE}); do not edit by hand. */"
    )
    return "\n".join([header, *rules]) + "\n"


def markdown_to_safe_html(text: str) -> str:
    """Render a reply's Markdown to HTML that is safe to insert into the page."""
    if not text:
        return ""
    html = _parser().render(text[:MAX_RENDER_CHARS])
    safe_html = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_keep_code_language,
        url_schemes=set(ALLOWED_URL_SCHEMES),
        filter_style_properties=set(ALLOWED_STYLE_PROPERTIES),
        link_rel=LINK_REL,
        strip_comments=True,
    )
    return highlight_code_blocks(safe_html)


if __name__ == "__main__":
    sys.stdout.write(highlight_stylesheet())
