"""CMU pocketsphinx: Sphinx model folders, its own en-US model from the wheel (transcribe)."""
