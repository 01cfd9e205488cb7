"""Keep Hugging Face libraries from drawing progress bars and info logs over corral's output."""

from __future__ import annotations


def quiet_hf() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
