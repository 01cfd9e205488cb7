"""spaCy: the handler that serves a trained pipeline's named entities (classify_tokens)."""
