"""Measuring rag: golden sets -> per-question scores and reports (`rag eval`), and timings (`rag bench`)."""
