"""Start the real Gradio app in-process on loopback, with every store under a temporary data root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


def running_app(home: Path, extra_env: dict[str, str] | None = None,
                auth: list[tuple[str, str]] | None = None) -> Iterator[str]:
    """Yield the local URL of a launched app; close it and restore the environment afterwards.

    The heartbeat is 1 s (gradio's default is 15 s), so a closed client ends its session quickly."""
    mp = pytest.MonkeyPatch()
    env = {"WORKBENCH_HOME": str(home), "GRADIO_TEMP_DIR": str(home / "gradio"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1", "GRADIO_HEARTBEAT_INTERVAL": "1",
           **(extra_env or {})}
    for key, value in env.items():
        mp.setenv(key, value)
    from workbench.app import configure_environment

    configure_environment()
    from workbench.app.ui import before_launch, build_ui, launch_options

    before_launch()
    demo = build_ui()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, auth=auth,
                **launch_options())
    try:
        yield demo.local_url
    finally:
        demo.close()
        mp.undo()
