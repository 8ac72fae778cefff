"""Page furniture: sentences a site repeats around every article (an affiliate disclaimer, a cookie
notice, "Share this article", a newsletter prompt), kept in the document text so offsets hold, but
never evidence.

The rule is learned from the corpus, not listed: furniture is text that recurs in several
documents in different surroundings. A sentence (compared lower-cased, spaces collapsed) is
furniture when it is in at least `min_docs` documents, in short recurring runs (a block of at most
`max_run` recurring sentences, as headers and footers are), next to at least `min_contexts`
different non-recurring neighbours. A syndicated copy of a whole article recurs in the same
surroundings, as one long run, so it is not furniture: copies are handled at ranking time.
The thresholds and what they catch are measured in benchmarks/furniture.py.
"""

from __future__ import annotations

import re
from collections import defaultdict

from ..types import Sentence

MIN_DOCS = 3
MIN_CONTEXTS = 3
MAX_RUN = 4


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w%$]+", " ", text.lower()).split())


def furniture(sentences: list[Sentence], min_docs: int = MIN_DOCS, min_contexts: int = MIN_CONTEXTS, max_run: int = MAX_RUN,
              titles: dict[str, str] | None = None) -> set[int]:
    """Ids of the sentences that are page furniture (see the module's docstring). A sentence
    that is its own document's title (`titles`: doc id -> title) is the title, not furniture,
    however many documents share it (the sections of one long article, say).

    >>> from rag.types import Sentence
    >>> def doc(d, lines): return [Sentence(doc_id=d, sentence_id=hash((d, n)) % 10**9, chunk_id=0, text=t, start=0, end=1) for n, t in enumerate(lines)]
    >>> rows = [s for n in range(4) for s in doc(f"d{n}", [f"Story {n} begins.", f"Fact {n} is here.", "Share this article."])]
    >>> sorted(s.text for s in rows if s.sentence_id in furniture(rows))
    ['Share this article.', 'Share this article.', 'Share this article.', 'Share this article.']
    >>> copies = [s for n in range(4) for s in doc(f"c{n}", ["Same story.", "Same fact.", "Same end."])]
    >>> furniture(copies)
    set()
    """
    by_doc: dict[str, list[Sentence]] = defaultdict(list)
    for s in sentences:
        by_doc[s.doc_id].append(s)
    keys = {s.sentence_id: _key(s.text) for s in sentences}
    own_title = {d: _key(t) for d, t in (titles or {}).items()}
    docs_of: dict[str, set[str]] = defaultdict(set)
    for s in sentences:
        if sum(c.isalpha() for c in keys[s.sentence_id]) >= 4:  # not a splitter's fragment ("D.", "f")
            docs_of[keys[s.sentence_id]].add(s.doc_id)
    recurring = {k for k, docs in docs_of.items() if len(docs) >= min_docs}
    if not recurring:
        return set()
    contexts: dict[str, set[tuple[str, str]]] = defaultdict(set)
    members: dict[str, list[int]] = defaultdict(list)
    for rows in by_doc.values():
        rows.sort(key=lambda s: s.start)
        n = 0
        while n < len(rows):
            if keys[rows[n].sentence_id] not in recurring:
                n += 1
                continue
            end = n
            while end < len(rows) and keys[rows[end].sentence_id] in recurring:
                end += 1
            if end - n <= max_run:  # a short block: a header, a footer, a notice
                context = (keys[rows[n - 1].sentence_id] if n else "", keys[rows[end].sentence_id] if end < len(rows) else "")
                for s in rows[n:end]:
                    if keys[s.sentence_id] == own_title.get(s.doc_id):
                        continue
                    contexts[keys[s.sentence_id]].add(context)
                    members[keys[s.sentence_id]].append(s.sentence_id)
            n = end
    return {sid for k, ids in members.items() if len(contexts[k]) >= min_contexts for sid in ids}
