"""sentence-transformers: the embedding handler."""
