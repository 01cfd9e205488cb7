"""Hugging Face diffusers: text-to-image and text-to-video pipelines (handler.py), their size rules
(pipes.py) and the diffusion loop in a worker thread, streamed as progress steps (steps.py)."""
