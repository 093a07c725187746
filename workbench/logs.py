"""Logging for the command line: the workbench's own progress lines, and the one place where known
harmless third-party warnings are filtered (each with the reason it is harmless here)."""

from __future__ import annotations

import logging

#: (library, text in the message, why it is harmless for the workbench)
HARMLESS = (
    ("transformers", "requires torchvision (not installed)",
     "image processors of pipelines with a safety checker or image encoder; the workbench never uses them"),
    ("transformers", "mean_resizing",
     "textual inversion adds a token; its embedding is trained from the initializer word, not the default draw"),
    ("diffusers", "No LoRA keys associated to CLIPTextModel",
     "the LoRA recipes train the UNet only unless train_text_encoder is set"),
)


class _Harmless(logging.Filter):
    def __init__(self, library: str):
        super().__init__()
        self.texts = tuple(text for lib, text, _ in HARMLESS if lib == library)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def quiet_third_party() -> None:
    """Drop the :data:`HARMLESS` messages from transformers' and diffusers' log handlers (idempotent)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library, module in (("transformers", transformers_logging), ("diffusers", diffusers_logging)):
        module.get_logger(library)  # configures the library's root logger and its handler
        for handler in logging.getLogger(library).handlers:
            if not any(isinstance(f, _Harmless) for f in handler.filters):
                handler.addFilter(_Harmless(library))


def setup_cli_logging() -> None:
    """INFO lines of the workbench's own progress on stderr, without third-party noise."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_third_party()
