"""OCR engines on pages rendered here with known text: character error rate and seconds per page.

Issue 23 asks scanned pages and images to be read by OCR, with Tesseract (Debian's
`tesseract-ocr` + `tesseract-ocr-eng`, through pytesseract) and RapidOCR (PP-OCR ONNX models
shipped inside the `rapidocr` wheel, on onnxruntime) measured on this CPU. The pages are drawn with
Pillow in matplotlib's bundled fonts (DejaVu Serif/Sans/Mono, STIX: present wherever rag installs),
from the seed corpus's own prose, at 200 dpi (a scanner's usual setting): several fonts and sizes,
a page turned by 2 degrees, a two-column page, a table and a photocopy (blurred, noisy JPEG). The
reference is the text in reading order (a two-column page: the left column, then the right; a
table: row by row). CER = Levenshtein distance / reference length, after collapsing whitespace.
A blank and a noise page show what each engine invents from nothing (characters out; 0 is right).

Timing is paired: each round runs every page through both engines, alternating which goes first,
so a machine shared with other work slows both alike; s/page is the median over rounds. Models
load once before the rounds (their load time is reported apart). Nothing is downloaded: RapidOCR
is given the paths of the three models inside its wheel, and a guard makes any network connection
during the run an error (`network_calls` in the result).

Engines: `tesseract` (one thread, OMP_THREAD_LIMIT=1), `rapidocr` (what rag ships:
rag/ingest/ocr.py); variants `tesseract-omp` (OpenMP's own thread count) and `rapidocr-cls`
(RapidOCR's own pipeline with its line classifier, which also records its lines as returned).
Tesseract is not a dependency of rag: `apt-get install -y tesseract-ocr tesseract-ocr-eng` and
`pip install pytesseract` first.

    python -m benchmarks.ocr [--rounds 3] [--engines tesseract,rapidocr]

Writes benchmarks/results/<date>-<commit>-ocr.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from benchmarks.results_file import RESULTS, ROOT, commit, cpu_model

DPI = 200
PAGE = (int(8.5 * DPI), int(11 * DPI))  # US letter
MARGIN = int(0.8 * DPI)


# -- the pages ------------------------------------------------------------------------------


def font(name: str, points: float) -> ImageFont.FreeTypeFont:
    """A font bundled with matplotlib (a dependency), at `points` on a DPI page."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), round(points * DPI / 72))


def prose(n_chars: int, seed: int) -> list[str]:
    """Paragraphs of the seed corpus's prose, about `n_chars` in all (seeded: same text every run)."""
    paragraphs = []
    for path in sorted((ROOT / "corpus").glob("*.txt")):
        paragraphs += [p.strip() for p in path.read_text(encoding="utf-8").split("\n") if len(p.strip()) > 200]
    rng = random.Random(seed)
    start = rng.randrange(len(paragraphs) - 20)
    out, total = [], 0
    for p in paragraphs[start:]:
        out.append(p)
        total += len(p)
        if total >= n_chars:
            break
    return out


def wrap(text: str, f: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and f.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def draw_block(draw: ImageDraw.ImageDraw, paragraphs: list[str], f, x: int, y: int, width: int, bottom: int) -> tuple[list[str], int]:
    """Draws paragraphs from (x, y) until `bottom`; returns the lines drawn and the next y."""
    step = round(f.size * 1.35)
    drawn = []
    for p in paragraphs:
        for line in wrap(p, f, width):
            if y + step > bottom:
                return drawn, y
            draw.text((x, y), line, font=f, fill=0)
            drawn.append(line)
            y += step
        y += step // 2
    return drawn, y


def blank_page() -> Image.Image:
    return Image.new("L", PAGE, 255)


def page_text(font_name: str, points: float, seed: int, heading: str | None = None) -> tuple[Image.Image, str]:
    img = blank_page()
    draw = ImageDraw.Draw(img)
    ref, y = [], MARGIN
    if heading:
        hf = font("DejaVuSans-Bold.ttf", 18)
        draw.text((MARGIN, y), heading, font=hf, fill=0)
        ref.append(heading)
        y += round(hf.size * 2)
    lines, _ = draw_block(draw, prose(6000, seed), font(font_name, points), MARGIN, y, PAGE[0] - 2 * MARGIN, PAGE[1] - MARGIN)
    return img, "\n".join(ref + lines)


def page_mixed_sizes(seed: int) -> tuple[Image.Image, str]:
    """A heading, body text at 10 pt, a quote at 12 pt italic-free serif and footnotes at 7 pt."""
    img = blank_page()
    draw = ImageDraw.Draw(img)
    width, bottom = PAGE[0] - 2 * MARGIN, PAGE[1] - MARGIN
    ref, y = [], MARGIN
    hf = font("DejaVuSerif-Bold.ttf", 20)
    heading = "Quarterly Review of Infrastructure Spending"
    draw.text((MARGIN, y), heading, font=hf, fill=0)
    ref.append(heading)
    y += round(hf.size * 2)
    paragraphs = prose(5000, seed)
    for paras, f, limit in ((paragraphs[:2], font("DejaVuSans.ttf", 10), bottom - 900), (paragraphs[2:3], font("STIXGeneral.ttf", 13), bottom - 450), (paragraphs[3:], font("DejaVuSans.ttf", 7), bottom)):
        lines, y = draw_block(draw, paras, f, MARGIN, y, width, limit)
        ref += lines
    return img, "\n".join(ref)


def page_two_columns(seed: int) -> tuple[Image.Image, str]:
    img = blank_page()
    draw = ImageDraw.Draw(img)
    f = font("STIXGeneral.ttf", 10)
    gap = int(0.3 * DPI)
    col = (PAGE[0] - 2 * MARGIN - gap) // 2
    paragraphs = prose(7000, seed)
    left, _ = draw_block(draw, paragraphs, f, MARGIN, MARGIN, col, PAGE[1] - MARGIN)
    used = len(" ".join(left).split())
    rest = " ".join(" ".join(paragraphs).split()[used:])
    right, _ = draw_block(draw, [rest], f, MARGIN + col + gap, MARGIN, col, PAGE[1] - MARGIN)
    return img, "\n".join(left + right)


def page_table(seed: int) -> tuple[Image.Image, str]:
    """A caption and a ruled table of regions by quarter (text and numbers), read row by row."""
    rng = random.Random(seed)
    img = blank_page()
    draw = ImageDraw.Draw(img)
    f, bold = font("DejaVuSans.ttf", 10), font("DejaVuSans-Bold.ttf", 10)
    caption = "Table 3. Freight volume by region and quarter (thousand tonnes)"
    draw.text((MARGIN, MARGIN), caption, font=bold, fill=0)
    regions = ["North Harbour", "East Valley", "Southern Plains", "West Coast", "Central District", "Lakeside",
               "Upper Ridge", "Riverside", "Old Town", "Airport Zone", "Free Port", "Northern Isles"]
    header = ["Region", "Q1 2024", "Q2 2024", "Q3 2024", "Q4 2024", "Change"]
    rows = [header]
    for region in regions:
        qs = [rng.uniform(80, 2400) for _ in range(4)]
        rows.append([region, *(f"{q:,.1f}" for q in qs), f"{(qs[3] / qs[0] - 1) * 100:+.1f}%"])
    widths = [int(PAGE[0] * w) for w in (0.26, 0.12, 0.12, 0.12, 0.12, 0.1)]
    row_h = round(f.size * 2.1)
    x0, y = MARGIN, MARGIN + row_h * 2
    ref = [caption]
    for i, row in enumerate(rows):
        x = x0
        for cell, w in zip(row, widths):
            draw.rectangle([x, y, x + w, y + row_h], outline=0, width=2)
            tf = bold if i == 0 else f
            tx = x + 12 if cell is row[0] else x + w - 12 - tf.getlength(cell)  # numbers right-aligned
            draw.text((tx, y + (row_h - tf.size) // 2 - 2), cell, font=tf, fill=0)
            x += w
        ref.append(" ".join(row))
        y += row_h
    note = "Source: port authority returns; Change is Q4 against Q1."
    draw.text((MARGIN, y + row_h // 2), note, font=f, fill=0)
    ref.append(note)
    return img, "\n".join(ref)


def rotated(img: Image.Image, degrees: float) -> Image.Image:
    """Turned about the centre on white, as a page laid slightly askew on the glass."""
    return img.rotate(degrees, resample=Image.BICUBIC, fillcolor=255, expand=False)


def photocopy(img: Image.Image, seed: int) -> Image.Image:
    """Grey paper, blur, grain and JPEG: a worn copy scanned at 200 dpi."""
    rng = np.random.default_rng(seed)
    a = np.asarray(img.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    a = 40 + a * (200 / 255)  # toner never black, paper never white
    a += rng.normal(0, 18, a.shape)
    specks = rng.random(a.shape) < 0.002
    a[specks] = 30
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    import io

    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=45)
    return Image.open(io.BytesIO(buf.getvalue())).convert("L")


def noise_page(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (PAGE[1], PAGE[0]), dtype=np.uint8))


def pages() -> list[tuple[str, Image.Image, str]]:
    """(name, image, reference text); an empty reference means nothing should be read."""
    serif = page_text("DejaVuSerif.ttf", 11, seed=1)
    out = [
        ("serif-11pt", *serif),
        ("sans-9pt-heading", *page_text("DejaVuSans.ttf", 9, seed=2, heading="Harbour Bridge Works: Final Report")),
        ("mono-10pt", *page_text("DejaVuSansMono.ttf", 10, seed=3)),
        ("mixed-sizes-7-20pt", *page_mixed_sizes(seed=4)),
    ]
    times, times_ref = page_text("STIXGeneral.ttf", 12, seed=5)
    out.append(("times-12pt-rotated-2deg", rotated(times, 2.0), times_ref))
    out.append(("two-columns-10pt", *page_two_columns(seed=6)))
    out.append(("table", *page_table(seed=7)))
    copy, copy_ref = page_text("DejaVuSerif.ttf", 10, seed=8)
    out.append(("photocopy-10pt", photocopy(copy, seed=8), copy_ref))
    out.append(("blank", blank_page(), ""))
    out.append(("noise", noise_page(seed=9), ""))
    return out


# -- scoring ---------------------------------------------------------------------------------


def normalise(text: str) -> str:
    return " ".join(text.split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance, one row of the table at a time in numpy.

    >>> levenshtein("kitten", "sitting"), levenshtein("", "abc"), levenshtein("abc", "abc")
    (3, 3, 0)
    """
    if not a or not b:
        return len(a) + len(b)
    bv = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for i, ch in enumerate(a, start=1):
        # substitution or deletion from the previous row, then insertions along this row
        sub = row[:-1] + (bv != ord(ch))
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(sub, row[1:] + 1)
        row = np.minimum.accumulate(new - idx) + idx
    return int(row[-1])


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    return levenshtein(ref, hyp) / len(ref)


TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "\u2013": "-"})


def folded(text: str) -> str:
    """NFKC, curly quotes and long dashes as ASCII: what a search would not tell apart anyway."""
    import unicodedata

    return unicodedata.normalize("NFKC", text).translate(TYPOGRAPHY)


def word_recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's words (folded, with their repeats) found anywhere in the output:
    blind to order, so it tells text lost from text put in another order."""
    from collections import Counter

    ref, hyp = Counter(folded(reference).split()), Counter(folded(hypothesis).split())
    return sum((ref & hyp).values()) / sum(ref.values())


# -- the engines -----------------------------------------------------------------------------


class Tesseract:
    """Debian's tesseract 5 (LSTM) through pytesseract, English, automatic page segmentation.

    `threads` 1 sets OMP_THREAD_LIMIT=1: on two shared cores its OpenMP threads otherwise spin
    against each other and everything else (11.1 s against 2.2 s for one page, measured here)."""

    def __init__(self, threads: int | None = 1) -> None:
        self.threads = threads
        self.name = "tesseract" if threads == 1 else f"tesseract-omp{threads or ''}"

    def load(self) -> None:
        import pytesseract

        self.version = str(pytesseract.get_tesseract_version())

    def read(self, img: Image.Image) -> str:
        import pytesseract

        old = os.environ.get("OMP_THREAD_LIMIT")
        if self.threads:
            os.environ["OMP_THREAD_LIMIT"] = str(self.threads)
        try:
            return pytesseract.image_to_string(img, lang="eng")
        finally:
            if old is None:
                os.environ.pop("OMP_THREAD_LIMIT", None)
            else:
                os.environ["OMP_THREAD_LIMIT"] = old


class RapidOcr:
    """What rag ships (rag/ingest/ocr.py): RapidOCR's detector and recogniser from its wheel on
    onnxruntime, without its line classifier, boxes put in reading order by `reading_order`."""

    name = "rapidocr"

    def load(self) -> None:
        from importlib.metadata import version

        from rag.ingest.ocr import ocr_reader

        self.reader = ocr_reader()
        self.version = version("rapidocr")

    def read(self, img: Image.Image) -> str:
        return self.reader.read(img, timeout_s=600)


class RapidOcrPipeline:
    """RapidOCR's own pipeline, with its 180-degree line classifier as by default (`cls`); `read`
    gives the lines in the product's reading order, `as_returned` in the order RapidOCR returns
    them (top to bottom, across columns)."""

    def __init__(self, cls: bool = True) -> None:
        self.cls = cls
        self.name = "rapidocr-cls" if cls else "rapidocr-pipeline"
        self.as_returned = ""

    def load(self) -> None:
        import rapidocr
        from importlib.metadata import version
        from rapidocr import RapidOCR

        models = Path(rapidocr.__file__).parent / "models"
        self.engine = RapidOCR(params={
            "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
            "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
            "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
            "Global.use_cls": self.cls,
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": os.cpu_count() or 1,
        })
        self.version = version("rapidocr")
        self.engine(np.full((64, 256, 3), 255, np.uint8))

    def read(self, img: Image.Image) -> str:
        from rag.ingest.ocr import reading_order

        out = self.engine(np.asarray(img.convert("RGB")))
        if out.boxes is None:
            self.as_returned = ""
            return ""
        self.as_returned = "\n".join(out.txts)
        return reading_order([(np.asarray(b, dtype=float), t) for b, t in zip(out.boxes, out.txts)])


ENGINES = {
    "tesseract": Tesseract,
    "rapidocr": RapidOcr,
    "tesseract-omp": lambda: Tesseract(threads=None),
    "rapidocr-cls": lambda: RapidOcrPipeline(cls=True),
    "rapidocr-pipeline": lambda: RapidOcrPipeline(cls=False),
}


class NoNetwork:
    """Counts (and refuses) every attempt to open a network connection while active."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> "NoNetwork":
        self._connect, self._create = socket.socket.connect, socket.create_connection

        def refuse(*args, **kwargs):
            self.calls.append(repr(args[1:] or kwargs)[:200])
            raise OSError("network access during the OCR benchmark")

        socket.socket.connect = lambda sock, *a, **k: refuse(sock, *a, **k)
        socket.create_connection = lambda *a, **k: refuse(None, *a, **k)
        return self

    def __exit__(self, *exc) -> None:
        socket.socket.connect, socket.create_connection = self._connect, self._create


def uncommitted() -> list[str]:
    """Tracked files with changes not committed when the run started (none of them this script's)."""
    import subprocess

    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout
    return [line[3:] for line in out.splitlines()]


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default="tesseract,rapidocr")
    ap.add_argument("--name", default="ocr", help="result file name suffix")
    ap.add_argument("--save-pages", type=Path, help="also write the rendered pages as PNG here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engines = [ENGINES[n]() for n in args.engines.split(",")]
    book = pages()
    if args.save_pages:
        args.save_pages.mkdir(parents=True, exist_ok=True)
        for name, img, _ in book:
            img.save(args.save_pages / f"{name}.png")
    changed = uncommitted()  # at the start: what the measured code could have picked up
    load_s, texts, seconds = {}, {}, {e.name: {name: [] for name, _, _ in book} for e in engines}
    with NoNetwork() as guard:
        for e in engines:
            t = time.perf_counter()
            e.load()
            load_s[e.name] = round(time.perf_counter() - t, 2)
        for r in range(args.rounds):
            for i, (name, img, _) in enumerate(book):
                order = engines if (r + i) % 2 == 0 else engines[::-1]
                for e in order:
                    t = time.perf_counter()
                    text = e.read(img)
                    seconds[e.name][name].append(time.perf_counter() - t)
                    texts.setdefault((e.name, name), text)
                    if getattr(e, "as_returned", None) is not None:
                        texts.setdefault((e.name + ":as-returned", name), e.as_returned)
                print(f"round {r + 1}/{args.rounds}: {name} " + " ".join(f"{e.name} {seconds[e.name][name][-1]:.2f} s" for e in engines), flush=True)
    rows = []
    for name, _, ref in book:
        for e in engines:
            hyp = texts[(e.name, name)]
            rows.append({
                "page": name, "engine": e.name,
                "cer": round(cer(ref, hyp), 4) if ref else None,
                "cer_typography_folded": round(cer(folded(ref), folded(hyp)), 4) if ref else None,
                "word_recall": round(word_recall(ref, hyp), 4) if ref else None,
                **({"cer_lines_as_returned": round(cer(ref, texts[(e.name + ":as-returned", name)]), 4)} if ref and (e.name + ":as-returned", name) in texts else {}),
                "chars_out": len(normalise(hyp)), "ref_chars": len(normalise(ref)),
                "s_per_page": round(statistics.median(seconds[e.name][name]), 2),
                "s_all": [round(s, 2) for s in seconds[e.name][name]],
                "text": hyp,
            })
    summary = {}
    for e in engines:
        mine = [row for row in rows if row["engine"] == e.name]
        scored = [row for row in mine if row["cer"] is not None]
        summary[e.name] = {
            "cer_mean": round(statistics.mean(row["cer"] for row in scored), 4),
            "cer_pooled": round(sum(row["cer"] * row["ref_chars"] for row in scored) / sum(row["ref_chars"] for row in scored), 4),
            "cer_typography_folded_mean": round(statistics.mean(row["cer_typography_folded"] for row in scored), 4),
            "word_recall_mean": round(statistics.mean(row["word_recall"] for row in scored), 4),
            "s_per_page_median": round(statistics.median(row["s_per_page"] for row in scored), 2),
            "s_per_text_page_mean": round(statistics.mean(row["s_per_page"] for row in scored), 2),
            "chars_from_nothing": {row["page"]: row["chars_out"] for row in mine if row["cer"] is None},
            "load_s": load_s[e.name],
            "version": getattr(e, "version", "?"),
        }
    record = {
        "question": "Which OCR engine reads scanned pages best (CER first), then fastest, on this CPU?",
        "commit": commit(mark_dirty=False), "uncommitted": changed, "cpu": cpu_model(), "cores": os.cpu_count(), "dpi": DPI, "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
        "network_calls": guard.calls,
        "references": {name: ref for name, _, ref in book},
        "summary": summary, "pages": rows,
    }
    # named by the commit of this code; other people's uncommitted files are listed, not marked dirty
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-{commit(mark_dirty=False)}-{args.name}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n| page | " + " | ".join(f"{e.name} CER | folded | words found | s/page" for e in engines) + " |")
    print("|---|" + "---|---|---|---|" * len(engines))
    for name, _, ref in book:
        cells = []
        for e in engines:
            row = next(x for x in rows if x["page"] == name and x["engine"] == e.name)
            if row["cer"] is None:
                cells += [f"{row['chars_out']} chars out", "", ""]
            else:
                cells += [f"{row['cer']:.3f}", f"{row['cer_typography_folded']:.3f}", f"{row['word_recall']:.3f}"]
            cells.append(f"{row['s_per_page']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for e in engines:
        print(f"{e.name}: {summary[e.name]}")
    print(f"network calls: {len(guard.calls)}; wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
