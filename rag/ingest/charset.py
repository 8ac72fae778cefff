"""Bytes -> str for text formats: a byte-order mark if there is one, then UTF-8, then detection.

Legacy files are mostly Windows-1252 (Western Europe, old Office exports), and a statistical
detector cannot tell short Western texts from their Baltic or Central European cousins
(measured: charset-normalizer reads a French cp1252 sentence as cp1257, "coûte" as "coūte").
So cp1252 is taken whenever it reads the bytes about as cleanly as the detector's guess, as
browsers default to it; a text that only reads cleanly in another code page (Russian in cp1251,
Polish in cp1250) keeps the detected one.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from .base import ConversionError

# Byte-order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
WESTERN = "cp1252"
# How much more "chaos" (charset-normalizer's mess score, 0..1) cp1252 may show than the top guess
# and still be preferred: the detector's own ties are 0.0 vs 0.059 on one French sentence.
WESTERN_MARGIN = 0.1
SAMPLE_CHARS = 65_536
# A decoded text with more than this share of control characters (other than tab, newlines and
# form feed) is binary that happened to decode, not text.
MAX_CONTROL_SHARE = 0.01
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # Unicode's Cc, less \t \n \v \f \r


def decode_text(data: bytes, path: Path) -> str:
    """The text of a file whose encoding is not declared.

    Args:
        data: the file's bytes.
        path: the file, for messages only.

    Returns:
        The decoded text without a byte-order mark; line endings are kept as they are.

    Raises:
        ConversionError: the file is empty, or is binary rather than text.

    >>> decode_text("café".encode("cp1252"), Path("a.txt"))
    'café'
    >>> decode_text(codecs.BOM_UTF8 + "x".encode(), Path("a.txt"))
    'x'
    """
    if not data:
        raise ConversionError("empty file (0 bytes)")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data[len(bom) :].decode(encoding))
            except UnicodeDecodeError as err:
                raise ConversionError(f"not valid {encoding.upper()} although it starts with that byte-order mark ({err.reason} at byte {err.start})") from None
    try:
        return _checked(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    if b"\x00" in data:
        raise ConversionError("binary file (contains NUL bytes), not text")
    return _checked(_detect(data))


def _detect(data: bytes) -> str:
    # Imported here: only legacy files need them.
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    best = from_bytes(data).best()
    try:
        western = data.decode(WESTERN)
    except UnicodeDecodeError:  # cp1252 leaves 5 byte values undefined
        western = None
    if western is not None:
        # The detector samples; so does this, to keep a 5 MB file cheap.
        western_chaos = mess_ratio(western[:SAMPLE_CHARS], maximum_threshold=1.0)
        if western_chaos <= (best.chaos if best is not None else 0.0) + WESTERN_MARGIN:
            return western
    if best is None:
        raise ConversionError("not text: no character encoding reads it (a binary file?)")
    return str(best)


def _checked(text: str) -> str:
    """`text`, unless it is mostly control characters (binary that happened to decode)."""
    if text:
        controls = len(_CONTROL.findall(text))
        if controls / len(text) > MAX_CONTROL_SHARE:
            raise ConversionError(f"binary file ({controls} control characters in {len(text)}), not text")
    return text
