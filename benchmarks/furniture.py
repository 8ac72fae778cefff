"""Page furniture on converted HTML pages: what the HTML conversion already drops, what the
recurrence rule (rag/index/furniture.py) catches of the rest, and what it wrongly takes from
real text.

    python -m benchmarks.furniture

Pages: 240 articles (distractor-set passages, several paragraphs each) published as HTML by four
made-up sites, each with its own header, navigation, by-line, share buttons, affiliate
disclaimer, newsletter prompt, cookie notice and footer, in the markup such sites use (nav,
aside, footer, divs with class names, and some furniture inside the article body, where
extractors keep it). Every page goes through rag's own HtmlConverter (trafilatura) and sentence
splitter; a sentence is labelled furniture when it is not in the article's own text. The rule's
thresholds (min documents, min distinct surroundings, max run) are swept here.

False positives on real text: the distractor corpus (1,132 passages), the seed news corpus, and a
corpus of syndicated copies (one article 50 times, and 5 articles 10 times with different
lead-ins), where nothing is furniture.
"""

from __future__ import annotations

import argparse
import html
import json
import random
from pathlib import Path

from benchmarks.results_file import result_path
from rag.index.chunking import split_sentences
from rag.index.furniture import _key, furniture
from rag.ingest.html import HtmlConverter
from rag.types import Sentence

ROOT = Path(__file__).resolve().parents[1]
AUTHORS = ["Dana Whitfield", "Marco Ruiz", "Priya Natarajan", "Tom Becker", "Lena Sorensen", "Kofi Mensah", "Ana Lima", "Jonas Weber"]
SITES = [
    {
        "name": "Daily Ledger",
        "header": '<header><a href="/">Daily Ledger</a><nav><a href="/world">World</a><a href="/tech">Tech</a><a href="/money">Money</a></nav></header>',
        "byline": '<p class="byline">By {author}, staff writer. Published {date}.</p>',
        "top": '<div class="share">Share this article on Facebook. Share on X. Copy link.</div>',
        "inline": "<p>When you purchase through links on our site, we may earn an affiliate commission.</p>",
        "bottom": '<p>Sign up for the Daily Ledger newsletter to get the best stories in your inbox every morning.</p><aside class="related"><h3>Related stories</h3><ul><li>More from the Ledger</li></ul></aside>',
        "footer": "<footer><p>© 2023 Daily Ledger Media. All rights reserved.</p><p>We use cookies to improve your experience. By continuing to browse, you accept our use of cookies.</p></footer>",
    },
    {
        "name": "Tech Meridian",
        "header": '<div id="top-bar">Skip to main content</div><nav class="menu"><a>Reviews</a><a>Deals</a><a>Guides</a></nav>',
        "byline": '<div class="author">Written by {author} | {date}</div>',
        "top": "<p>Tech Meridian is supported by its audience. We may receive a commission when you buy through links in this article.</p>",
        "inline": '<div class="ad">Advertisement</div>',
        "bottom": "<p>Follow Tech Meridian on social media for the latest news and reviews.</p><p>Have a tip? Contact our newsroom.</p>",
        "footer": '<footer>Tech Meridian is part of Meridian Group. Terms of use. Privacy policy. Cookie settings.</footer>',
    },
    {
        "name": "The Courier Online",
        "header": "<header><p>The Courier Online</p><p>Subscribe now for full access to every article.</p></header>",
        "byline": "<p>{author} reports for The Courier. {date}</p>",
        "top": "<p>This article is more than two years old.</p>",
        "inline": "<p>Read more: our full coverage of this story.</p>",
        "bottom": "<p>Comments are closed for this article.</p><p>Share your thoughts with us on our community pages.</p>",
        "footer": "<footer><p>The Courier Online uses cookies for analytics and personalised ads. Manage your preferences at any time.</p></footer>",
    },
    {
        "name": "Pocket Review",
        "header": '<nav><a>Home</a><a>Latest</a><a>Best picks</a></nav>',
        "byline": '<span class="byline">{author}</span><time>{date}</time>',
        "top": "<p>Our editors independently research, test and recommend the best products.</p>",
        "inline": "<p>Prices were accurate at the time of publishing but may change.</p>",
        "bottom": "<p>Was this article helpful? Let us know in the comments below.</p>",
        "footer": "<footer><p>Pocket Review may earn a small share of sales from products purchased through our site as part of our affiliate partnerships.</p></footer>",
    },
]


def page(site: dict, title: str, paragraphs: list[str], rng: random.Random) -> str:
    date = f"{rng.choice(['March', 'June', 'October'])} {rng.randint(1, 28)}, 202{rng.randint(1, 3)}"
    body = [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    body.insert(min(len(body), 1 + rng.randrange(max(1, len(body) - 1))), site["inline"])
    return (
        f"<html><head><title>{html.escape(title)} | {site['name']}</title></head><body>{site['header']}"
        f"<article><h1>{html.escape(title)}</h1>{site['byline'].format(author=rng.choice(AUTHORS), date=date)}{site['top']}"
        f"{''.join(body)}{site['bottom']}</article>{site['footer']}</body></html>"
    )


def sentences_of(doc_id: str, text: str, first_id: int) -> list[Sentence]:
    return [Sentence(doc_id=doc_id, sentence_id=first_id + n, chunk_id=0, text=text[a:b], start=a, end=b) for n, (a, b) in enumerate(split_sentences(text))]


def articles(n: int, rng: random.Random) -> list[tuple[str, list[str]]]:
    """Up to n articles of 3-6 paragraphs: consecutive distractor-set passages of one source
    article, no passage used twice (so no article text recurs across pages)."""
    corpus = sorted((ROOT / "tests" / "golden" / "distractor" / "corpus").glob("*.txt"))
    groups: dict[str, list[Path]] = {}
    for p in corpus:
        groups.setdefault(p.stem.rsplit("_", 1)[0], []).append(p)
    out = []
    for stem in sorted(groups):
        files = groups[stem]
        while len(files) >= 3 and len(out) < n:
            take, files = files[: rng.randint(3, 6)], files[6:] if len(files) > 6 else []
            texts = [p.read_text(encoding="utf-8").split("\n\n", 1) for p in take]
            out.append((texts[0][0].strip() + f" ({len(out) + 1})", [t[1].strip() for t in texts if len(t) == 2]))
    return out


def score(rows: list[Sentence], truth: set[int], found: set[int]) -> dict:
    tp = len(found & truth)
    return {"furniture_sentences": len(truth), "caught": tp, "recall": round(tp / max(1, len(truth)), 4),
            "precision": round(tp / max(1, len(found)), 4), "content_taken": len(found - truth),
            "content_taken_share": round(len(found - truth) / max(1, len(rows) - len(truth)), 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=240)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    rng = random.Random(args.seed)
    converter = HtmlConverter()
    rows: list[Sentence] = []
    page_titles: dict[str, str] = {}
    truth: set[int] = set()
    kept_text = dropped = total_furniture_lines = 0
    for n, (title, paragraphs) in enumerate(articles(args.pages, rng)):
        site = SITES[n % len(SITES)]
        extracted = converter.convert(page(site, title, paragraphs, rng).encode(), Path(f"p{n}.html"))
        text, page_titles[f"p{n}"] = extracted.text, extracted.title
        own = " ".join(_key(x) for x in [title, *paragraphs])
        sents = sentences_of(f"p{n}", text, len(rows))
        for s in sents:
            if _key(s.text) not in own:
                truth.add(s.sentence_id)
        kept_text += sum(1 for s in sents if s.sentence_id not in truth)
        rows += sents
    template_lines = {_key(x) for site in SITES for part in ("header", "top", "inline", "bottom", "footer") for x in [site[part]]}
    total_furniture_lines = len(template_lines)
    result: dict = {"pages": args.pages, "sites": len(SITES), "sentences_after_conversion": len(rows),
                    "furniture_after_conversion": len(truth), "content_sentences": kept_text, "sweep": []}
    for min_docs in (2, 3, 5):
        for min_contexts in (2, 3, 5):
            for max_run in (2, 4, 8):
                found = furniture(rows, min_docs, min_contexts, max_run, titles=page_titles)
                result["sweep"].append({"min_docs": min_docs, "min_contexts": min_contexts, "max_run": max_run, **score(rows, truth, found)})
    default = furniture(rows, titles=page_titles)
    result["default"] = score(rows, truth, default)
    result["missed_examples"] = sorted({rows[i].text for i in truth - default})[:15]

    # false positives on real text
    def real(folder: Path) -> list[Sentence]:
        out: list[Sentence] = []
        for path in sorted(folder.glob("*.txt")):
            out += sentences_of(path.stem, path.read_text(encoding="utf-8"), len(out))
        return out

    checks = {"distractor corpus": real(ROOT / "tests" / "golden" / "distractor" / "corpus"), "seed corpus": real(ROOT / "corpus")}
    story = articles(6, random.Random(9))
    copies: list[Sentence] = []
    for c in range(50):
        copies += sentences_of(f"copy{c}", "\n\n".join(story[0][1]), len(copies))
    for a in range(1, 6):
        for c in range(10):
            lead = f"Reported by agency desk {c} in city {a * 10 + c}. "
            copies += sentences_of(f"synd{a}-{c}", lead + "\n\n".join(story[a][1]), len(copies))
    checks["syndicated copies"] = copies
    titles = {name: {x.doc_id: x.text for x in s if x.start == 0} for name, s in checks.items()}  # each file's first line is its title
    result["false_positives"] = {
        name: {"sentences": len(s), "taken": len(found), "examples": sorted({x.text for x in s if x.sentence_id in found})[:5]}
        for name, s in checks.items() for found in [furniture(s, titles=titles[name])]
    }
    out = result_path("furniture.json")
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=1))
    print(out)


if __name__ == "__main__":
    main()
