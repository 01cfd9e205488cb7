"""Hugging Face transformers: the causal-LM handler, continuous batching, sampling, constraints."""
