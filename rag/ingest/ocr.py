"""Page images -> text by OCR: RapidOCR (PP-OCR models inside its wheel, on onnxruntime), one page at a time, each within a time limit.

RapidOCR was chosen over Tesseract on character error rate over pages rendered with known text
(benchmarks/ocr.md): both read clean prose almost perfectly, but Tesseract dropped 40% of a ruled
table's words and misread a photocopy four times as often. It runs in-process from files its wheel
ships (nothing is downloaded; no system package). Its detector returns boxes, which
`reading_order` puts in reading order (columns, then lines; a table row by row).

The time limit is enforced inside onnxruntime: a timer sets `RunOptions.terminate`, which stops the
model run in progress, so a page over the limit costs the limit, not its own time. The converters
(`image.py`, `pdf.py`) call `read_pages`, which applies the page limit and reports every page not
read, by number, as a `Repair`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import ConversionError, Repair

if TYPE_CHECKING:
    from PIL import Image

    from ..config import Settings

log = logging.getLogger(__name__)

NO_TEXT = "no text found by OCR"
# Longest side an image is read at: a 600-dpi letter page (6600 px) is shrunk to ~300 dpi; the
# detector itself works at 2000 px at most, and 10 pt text is still ~40 px high here.
MAX_SIDE = 3300
# A page whose grey levels hardly vary holds nothing to read (blank paper, an empty frame).
BLANK_STD = 2.0


class OcrTimeout(Exception):
    """One page took longer than the limit; its OCR was stopped."""


class OcrReader:
    """RapidOCR with the packaged models, without the 180-degree line classifier (it turned
    upright lines over into garbage on rendered pages: benchmarks/ocr.md), on `threads` cores.

    Not re-entrant: `read` holds a lock, so pages are read one at a time per process (two at once
    would only share the same cores). Get one with `ocr_reader()`, which keeps it loaded.
    """

    def __init__(self, threads: int) -> None:
        import onnxruntime
        import rapidocr
        from rapidocr import RapidOCR

        models = Path(rapidocr.__file__).parent / "models"
        paths = {
            "Det.model_path": models / "PP-OCRv6_det_small.onnx",
            "Rec.model_path": models / "PP-OCRv6_rec_small.onnx",
            "Cls.model_path": models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        }
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:  # without them RapidOCR would try to download models: never at run time
            raise ConversionError(f"OCR models missing from the rapidocr package: {', '.join(missing)}; reinstall rapidocr")
        self._engine = RapidOCR(params={
            **{k: str(v) for k, v in paths.items()},
            "Global.use_cls": False,
            "Global.log_level": "error",
            # The detector sees the image at its own scale, up to 2000 px (RapidOCR's own cap). Its
            # default scales the short side up to 736 px: a one-line strip of 1100 x 150 became
            # 5400 x 736, 1.5-3.5 s for one line. A full page is not resized either way.
            "Det.limit_type": "max",
            "Det.limit_side_len": 2000,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        self._lock = threading.Lock()
        self._options = onnxruntime.RunOptions()
        self._new_options = onnxruntime.RunOptions
        self._engine(_sample())  # loads both models now, not inside the first page's time
        for stage in (self._engine.text_det, self._engine.text_rec):
            session = stage.session.session  # RapidOCR's OrtInferSession -> onnxruntime.InferenceSession
            run = session.run
            session.run = lambda names, feed, options=None, _run=run: _run(names, feed, options or self._options)

    def read(self, image: "Image.Image", timeout_s: float) -> str:
        """The text of one page image, in reading order; "" if none was found.

        Raises:
            OcrTimeout: it took longer than `timeout_s`.
        """
        pixels = _prepare(image)
        if float(pixels.std()) < BLANK_STD:
            return ""
        with self._lock:
            options = self._options = self._new_options()
            timer = threading.Timer(timeout_s, setattr, (options, "terminate", True))
            timer.daemon = True
            start = time.perf_counter()
            timer.start()
            try:
                out = self._engine(np.repeat(pixels[:, :, None], 3, axis=2))
            except Exception:
                if options.terminate:
                    raise OcrTimeout(f"{timeout_s:g} s") from None
                raise
            finally:
                timer.cancel()
            if options.terminate and out.boxes is None:  # stopped between two model runs: what it found is partial
                raise OcrTimeout(f"{timeout_s:g} s")
            log.debug("OCR: %d boxes in %.2f s", 0 if out.boxes is None else len(out.boxes), time.perf_counter() - start)
        if out.boxes is None or out.txts is None:
            return ""
        return reading_order([(np.asarray(b, dtype=float), t) for b, t in zip(out.boxes, out.txts)])


_readers: dict[int, OcrReader] = {}
_readers_lock = threading.Lock()


def ocr_reader(threads: int | None = None) -> OcrReader:
    """The process's reader for `threads` cores (default: all), loaded on first use (~1-4 s) and kept."""
    threads = threads or os.cpu_count() or 1
    with _readers_lock:
        if threads not in _readers:
            try:
                _readers[threads] = OcrReader(threads)
            except ImportError as err:
                raise ConversionError(f"OCR is not installed ({err}); pip install rapidocr") from None
        return _readers[threads]


def read_pages(pages: Sequence[tuple[int, Callable[[], "Image.Image"]]], settings: "Settings") -> tuple[dict[int, str], list[Repair]]:
    """OCR each (1-based page number, function giving its image), in order.

    At most `settings.ocr_max_pages` are read; each within `settings.ocr_page_timeout_s`. A page
    over the limit, one whose image cannot be made, and those past the page limit are left out of
    the result and reported by number; the others are kept.

    Returns:
        page number -> its text ("" for a page where nothing was found), and the repairs.
    """
    texts: dict[int, str] = {}
    repairs: list[Repair] = []
    if not pages:
        return texts, repairs
    reader = ocr_reader()
    for number, image_of in pages[: settings.ocr_max_pages]:
        try:
            image = image_of()
        except Exception as err:  # a damaged frame or page: that page only
            repairs.append(Repair(action=f"page {number} not read", reason=f"its image could not be made ({type(err).__name__}: {err})"[:300]))
            continue
        try:
            texts[number] = reader.read(image, settings.ocr_page_timeout_s)
        except OcrTimeout:
            repairs.append(Repair(action=f"page {number} not read", reason=f"OCR took over the {settings.ocr_page_timeout_s:g} s limit (ocr_page_timeout_s)"))
    skipped = [number for number, _ in pages[settings.ocr_max_pages :]]
    if skipped:
        span = f"page {skipped[0]}" if len(skipped) == 1 else f"pages {', '.join(map(str, skipped[:10]))}{', ...' if len(skipped) > 10 else ''}"
        repairs.append(Repair(action=f"{span} not read", reason=f"over the {settings.ocr_max_pages}-page OCR limit per file (ocr_max_pages)"))
    return texts, repairs


def no_text_error(repairs: list[Repair]) -> ConversionError:
    """The error for a file where OCR found nothing: why, with the pages that were not read."""
    return ConversionError(NO_TEXT + (f" ({'; '.join(f'{r.action}: {r.reason}' for r in repairs)})" if repairs else ""))


def _prepare(image: "Image.Image") -> np.ndarray:
    """The page as 8-bit grey pixels: transparency on white, 16-bit and float scaled, EXIF
    rotation applied, the longest side at most MAX_SIDE."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        image = Image.fromarray(((a - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(a)).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    image = image.convert("L")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return np.asarray(image)


def _sample() -> np.ndarray:
    """A small image with a word on it, to load the detector and the recogniser."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (320, 64), 255)
    ImageDraw.Draw(img).text((12, 10), "Warm up", font=ImageFont.load_default(36), fill=0)
    return np.repeat(np.asarray(img)[:, :, None], 3, axis=2)


def reading_order(boxes: list[tuple[np.ndarray, str]]) -> str:
    """Text boxes (4 corner points each, as a detector returns them) -> the page's text in
    reading order.

    The page is deskewed by the boxes' own slope, then cut recursively (XY-cut): into columns of
    prose where a vertical gap at least a line high separates two sides of long lines,
    else into bands at the widest horizontal gap. A band that cannot be cut is lines of boxes,
    left to right. A table's narrow cells never count as columns, so it reads row by row.
    Paragraphs (a gap of most of a line, or a new column) are separated by a blank line.

    >>> box = lambda x, y, w: np.array([[x, y], [x + w, y], [x + w, y + 20], [x, y + 20]], float)
    >>> reading_order([(box(0, 0, 300), "left one"), (box(400, 0, 300), "right one"),
    ...                (box(0, 30, 300), "left two"), (box(400, 30, 300), "right two")])
    'left one\\nleft two\\n\\nright one\\nright two'
    >>> reading_order([(box(0, 0, 100), "Region"), (box(300, 0, 60), "Q1"), (box(0, 30, 100), "North"), (box(300, 30, 60), "12.5")])
    'Region Q1\\nNorth 12.5'
    """
    if not boxes:
        return ""
    quads = np.stack([q for q, _ in boxes])
    texts = [t for _, t in boxes]
    top = quads[:, 1] - quads[:, 0]
    side = quads[:, 3] - quads[:, 0]
    long = np.hypot(top[:, 0], top[:, 1]) > 2 * np.hypot(side[:, 0], side[:, 1])
    angle = float(np.median(np.arctan2(top[long, 1], top[long, 0]))) if long.any() else 0.0
    c, s = np.cos(angle), np.sin(angle)
    pts = quads @ np.array([[c, -s], [s, c]])  # turned back by the page's slope: lines horizontal
    x0, y0 = pts[:, :, 0].min(1), pts[:, :, 1].min(1)
    x1, y1 = pts[:, :, 0].max(1), pts[:, :, 1].max(1)
    cy = (y0 + y1) / 2
    h = float(np.median(y1 - y0))

    def gaps(lo: np.ndarray, hi: np.ndarray, idx: list[int]) -> list[tuple[float, float]]:
        """(width, middle) of each stretch between the boxes of `idx` that none of them covers."""
        spans = sorted((lo[i], hi[i]) for i in idx)
        out, reach = [], spans[0][1]
        for a, b in spans[1:]:
            if a > reach:
                out.append((a - reach, (a + reach) / 2))
            reach = max(reach, b)
        return out

    def prose(idx: list[int]) -> bool:
        """Two or more boxes, typically long lines (8 line heights: ~16 characters) that fill
        most of their side's width: a column of text, not a column of table cells."""
        if len(idx) < 2:
            return False
        width = max(x1[i] for i in idx) - min(x0[i] for i in idx)
        typical = float(np.median([x1[i] - x0[i] for i in idx]))
        return typical >= 0.5 * width and typical >= 8 * h

    def cut(idx: list[int]) -> list[list[int]]:
        """The boxes of `idx` as blocks in reading order."""
        if len(idx) <= 1:
            return [idx]
        for width, at in sorted(gaps(x0, x1, idx), reverse=True):
            if width < h:
                break
            left, right = [i for i in idx if x1[i] <= at], [i for i in idx if x0[i] >= at]
            if prose(left) and prose(right):
                return cut(left) + cut(right)
        across = gaps(y0, y1, idx)
        if not across:
            return [idx]
        _, at = max(across)
        return cut([i for i in idx if y1[i] <= at]) + cut([i for i in idx if y0[i] >= at])

    lines: list[tuple[float, float, str]] = []  # (top, bottom, text) in reading order
    for block in cut(list(range(len(boxes)))):
        row: list[int] = []
        for i in sorted(block, key=lambda j: cy[j]) + [-1]:
            if row and (i < 0 or cy[i] - float(np.mean(cy[row])) > 0.5 * h):
                row.sort(key=lambda j: x0[j])
                lines.append((float(y0[row].min()), float(y1[row].max()), " ".join(texts[j].strip() for j in row)))
                row = []
            row.append(i)
    out = [lines[0][2]]
    for (top0, bottom0, _), (top1, _, text) in zip(lines, lines[1:]):
        out.append(("\n\n" if top1 - bottom0 > 0.8 * h or top1 < top0 else "\n") + text)
    return "".join(out)
