"""Model references, inspection and the local model store."""
