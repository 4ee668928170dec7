"""Agent replies render as Markdown and nothing in them can run in the browser."""

import re
from pathlib import Path

import pytest

from chat.rendering import highlight_stylesheet, markdown_to_safe_html

STATIC = Path(__file__).resolve().parents[2] / "static" / "chat"


def text_of(html: str) -> str:
    """What the reader sees of some HTML: its text, entities left as written."""
    return re.sub(r"<[^>]+>", "", html)


def test_empty_text_renders_nothing():
    assert markdown_to_safe_html("") == ""


def test_paragraphs_emphasis_and_lists_render():
    html = markdown_to_safe_html(
        "Hello **world** and *you*\n\n- one\n- two\n\n1. first\n"
    )
    assert "<strong>world</strong>" in html
    assert "<em>you</em>" in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert "<ol>\n<li>first</li>\n</ol>" in html


def test_code_blocks_keep_their_text_escaped():
    html = markdown_to_safe_html("```\nif a < b and c > d:\n    pass\n```")
    assert "<pre><code>" in html
    assert "if a &lt; b and c &gt; d:" in html
    highlighted = markdown_to_safe_html("```python\nif a < b and c > d:\n```")
    assert "&lt;" in highlighted and "&gt;" in highlighted
    assert "<" + " b" not in highlighted and "a < b" not in highlighted


def test_tables_render_with_alignment():
    html = markdown_to_safe_html("| a | b |\n| - | :-: |\n| 1 | 2 |\n")
    assert "<table>" in html
    assert "<th>a</th>" in html
    assert '<td style="text-align:center">2</td>' in html


def test_links_get_a_safe_rel():
    html = markdown_to_safe_html("[docs](https://example.com/a?b=1)")
    assert (
        '<a href="https://example.com/a?b=1" rel="noopener noreferrer nofollow">docs</a>'
        in html
    )


@pytest.mark.parametrize(
    "source",
    [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src=https://example.com></iframe>",
        '<div onclick="alert(1)">x</div>',
        "<svg onload=alert(1)>",
    ],
)
def test_raw_html_is_shown_as_text_never_as_markup(source):
    html = markdown_to_safe_html(source)
    assert "<" + source[1:] not in html
    assert "&lt;" in html
    for dangerous in ("<script", "<img", "<iframe", "<svg", "<div", 'onerror="'):
        assert dangerous not in html


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[click](vbscript:msgbox(1))",
    ],
)
def test_dangerous_link_schemes_are_dropped(source):
    html = markdown_to_safe_html(source).lower()
    assert 'href="javascript' not in html
    assert 'href="data' not in html
    assert 'href="vbscript' not in html


def test_images_become_links_so_nothing_is_fetched():
    html = markdown_to_safe_html("![a chart](https://example.com/chart.png)")
    assert "<img" not in html
    assert (
        '<a href="https://example.com/chart.png" rel="noopener noreferrer nofollow">'
        "a chart</a>" in html
    )


def test_styles_other_than_alignment_are_removed():
    html = markdown_to_safe_html("| a |\n| :- |\n| 1 |\n")
    assert 'style="text-align:left"' in html
    assert "color" not in html


def test_incomplete_markdown_still_renders_safely():
    html = markdown_to_safe_html("```\nunterminated <b>code")
    assert "<pre><code>unterminated &lt;b&gt;code" in html


# --- code blocks: the language kept, highlighted after sanitizing ----------------


def test_a_code_blocks_language_survives_sanitizing_and_is_highlighted():
    html = markdown_to_safe_html("```python\ndef greet(name):\n    return name\n```")
    assert html.startswith('<pre class="highlight"><code class="language-python">')
    assert '<span class="k">def</span>' in html
    assert '<span class="nf">greet</span>' in html
    # The same text as the block without a language shows, character for character.
    plain = markdown_to_safe_html("```\ndef greet(name):\n    return name\n```")
    assert text_of(html) == text_of(plain) == "def greet(name):\n    return name\n\n"


def test_highlighting_writes_classes_never_inline_styles():
    html = markdown_to_safe_html("```js\nconst x = 1; // one\n```")
    assert '<code class="language-js">' in html
    assert 'class="c1"' in html
    assert "style=" not in html


def test_a_language_pygments_does_not_know_keeps_its_class_unhighlighted():
    html = markdown_to_safe_html("```no-such-language\n<b>bold?</b>\n```")
    assert html.startswith('<pre><code class="language-no-such-language">')
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert "<span" not in html


@pytest.mark.parametrize(
    "fence",
    [
        '```python" onmouseover="alert(1)\nx = 1\n```',
        "```python><script>alert(1)</script>\nx = 1\n```",
        '```"><img src=x onerror=alert(1)>\nx = 1\n```',
    ],
)
def test_a_hostile_language_name_cannot_add_markup_or_attributes(fence):
    html = markdown_to_safe_html(fence)
    for dangerous in ("onmouseover=", "<script", "<img", "onerror="):
        assert dangerous not in html
    assert "x = 1" in text_of(html)


def test_markup_inside_highlighted_code_stays_text():
    html = markdown_to_safe_html(
        "```html\n<script>alert(1)</script><img src=x onerror=alert(2)>\n```"
    )
    assert '<code class="language-html">' in html
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in text_of(html)


def test_inline_code_and_other_tags_get_no_class():
    html = markdown_to_safe_html("Use `print()` **now**")
    assert "<code>print()</code>" in html
    assert "class=" not in html


def test_the_checked_in_highlight_stylesheet_matches_pygments():
    """static/chat/highlight.css is `python -m chat.rendering`'s output: a
    Pygments upgrade that changes the classes shows here."""
    css = (STATIC / "highlight.css").read_text()
    assert css == highlight_stylesheet()
    assert ".highlight .k {" in css
