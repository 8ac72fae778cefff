"""HTML -> the page's main text (trafilatura), its <title> as the title; scripts and styles never.

trafilatura drops navigation, footers and boilerplate, which is what a saved article page needs.
It returns nothing for pages without an article-like body (a short note, a table of links); then
the page's whole visible text is used, still without scripts, styles and other non-content
elements, so a page is only rejected when nothing visible is left.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

from .base import ConversionError, Extracted
from .charset import decode_text

log = logging.getLogger(__name__)

# A declared encoding: <meta charset="..."> or <meta http-equiv="Content-Type" content="...; charset=...">.
_DECLARED = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)
DECLARATION_BYTES = 4096  # browsers look for the declaration in the first 1024; be lenient
# Elements whose text is never content (trafilatura keeps <noscript>'s, hence removed first).
_HIDDEN = ("script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas")
# Elements that start a new line in the fallback text.
_BLOCKS = (
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
    "section", "article", "header", "footer", "nav", "aside", "main", "blockquote", "pre", "figure", "figcaption",
    "form", "hr", "address", "details", "summary", "caption",
)


class HtmlConverter:
    """Reads .html and .htm files."""

    suffixes = (".html", ".htm")

    def convert(self, data: bytes, path: Path) -> Extracted:
        """Main text and title of an HTML page.

        Raises:
            ConversionError: empty, not decodable, or no visible text outside scripts and styles.
        """
        tree = _parse(_decode(data, path))
        text, title = "", ""
        if tree is not None:
            title = " ".join((tree.findtext(".//title") or "").split())
            for element in list(tree.iter(*_HIDDEN)):
                if element.getparent() is not None:
                    element.drop_tree()  # keeps its tail text, which is outside the element
            text = _main_text(copy.deepcopy(tree)) or _visible_text(tree)
        if not text:
            raise ConversionError("no extractable text: the page has no visible text outside scripts, styles and markup")
        return Extracted(text=text, title=title)


def _decode(data: bytes, path: Path) -> str:
    """The page as text: the encoding it declares if that reads the bytes, else detected."""
    if not data.strip():
        raise ConversionError("empty file" + (" (0 bytes)" if not data else " (whitespace only)"))
    match = _DECLARED.search(data[:DECLARATION_BYTES])
    if match:
        encoding = match.group(1).decode("ascii").lower()
        try:
            return data.decode("cp1252" if encoding in ("iso-8859-1", "latin-1", "us-ascii") else encoding)
        except (LookupError, UnicodeDecodeError):  # an unknown or wrong declaration: detect instead
            pass
    return decode_text(data, path)


def _parse(html: str):
    """An lxml tree of the page, or None if there is no element at all (e.g. only a comment)."""
    import lxml.html
    from lxml import etree

    try:
        return lxml.html.document_fromstring(html.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except (etree.ParserError, ValueError):
        return None


def _main_text(tree) -> str:
    """trafilatura's main text, paragraphs separated by blank lines; "" if it finds none."""
    import trafilatura

    try:
        text = trafilatura.extract(tree, output_format="txt", include_comments=False, include_tables=True)
    except Exception as err:  # a third-party parser on hostile input: fall back, never crash the batch
        log.warning("trafilatura failed (%s: %s); using the page's visible text", type(err).__name__, err)
        return ""
    return _paragraphs(text or "")


def _visible_text(tree) -> str:
    """Every text node of the page's body (hidden elements already removed), one block per line."""
    for element in tree.iter(*_BLOCKS):
        element.tail = "\n" + (element.tail or "")
    body = tree.find(".//body")
    return _paragraphs((body if body is not None else tree).text_content())


def _paragraphs(text: str) -> str:
    """One paragraph per non-empty line, inner whitespace collapsed, separated by blank lines.

    >>> _paragraphs("  a  b \\n\\n\\n c\\n")
    'a b\\n\\nc'
    """
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n\n".join(line for line in lines if line)
