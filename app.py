"""Hugging Face Spaces entry point: ``python app.py`` (the Space's README front matter names this file)."""

from workbench.app.ui import build_ui, launch_options

demo = build_ui()

if __name__ == "__main__":
    demo.launch(**launch_options())
