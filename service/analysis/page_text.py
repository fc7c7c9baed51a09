"""Text from callers, flag files or Unleash, made safe to put into a report page.

Metric names, variants, segments, regions, bento tags and reasons reach the executed notebook's
Markdown and tables, and `report.html` is meant to be served over HTTP: each value is escaped
where it is put into a page (here for Markdown, `html.escape` elsewhere, pandas' Styler with
`styler.format.escape = "html"`), and nbconvert sanitizes the rendered page once more.
"""

from __future__ import annotations

import html
import re
from typing import Any

# The second line of defence behind escaping every value where it enters a page: a served
# report runs no script at all, whatever slipped through. Plots are data: images; styles inline.
CONTENT_POLICY = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "img-src data:; style-src 'unsafe-inline'; font-src data:\">"
)

# Markdown's own punctuation: a value must not open a link, image, emphasis or code span.
_MARKDOWN = re.compile(r"([\\`\[\]])")


def md(value: Any) -> str:
    """`value` as literal text inside Markdown: HTML-escaped, Markdown punctuation escaped."""
    return _MARKDOWN.sub(r"\\\1", html.escape(str(value), quote=False))


def escaped(styler: Any) -> Any:
    """A pandas Styler whose row and column labels are HTML-escaped (cells: `escape="html"` in
    each `.format`, which a later `.format` call would otherwise replace)."""
    return styler.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
