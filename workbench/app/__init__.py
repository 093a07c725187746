"""The Gradio app (``workbench app``, or ``app.py`` on Hugging Face Spaces): a thin UI over the library.

Importing this package sets gradio's privacy switches (analytics and telemetry off, uploads in the
workbench's own ``app_temp`` store, see :func:`workbench.lifecycle.stores.stores`) *before* gradio is
imported by :mod:`workbench.app.ui`. Nothing heavier happens at import: models load on first use.
"""

from __future__ import annotations

import os


def configure_environment() -> None:
    """Set the environment gradio reads; call before importing gradio (import of this package does)."""
    from workbench.lifecycle.stores import stores

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    temp = stores()["app_temp"]
    temp.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(temp)


configure_environment()
