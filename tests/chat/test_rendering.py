"""Agent replies render as Markdown and nothing in them can run in the browser."""

import pytest

from chat.rendering import markdown_to_safe_html


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
    html = markdown_to_safe_html("```python\nif a < b and c > d:\n    pass\n```")
    assert "<pre><code>" in html
    assert "if a &lt; b and c &gt; d:" in html


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
