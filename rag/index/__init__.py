"""Documents -> a searchable index: corpus loading, chunking, embedding, segments, BM25, the manifest, retrieval."""
