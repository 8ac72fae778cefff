"""Evidence -> a cited Answer: the reader, the answer policy, phrasing, citations, the prompt, follow-ups.

Named `answering`, not `answer`, so that `rag.answer` stays the function `from rag import answer` gives.
"""
