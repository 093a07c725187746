"""Hugging Face Spaces entry point: ``python app.py`` (the Space's README front matter names this file)."""

from workbench.app.ui import before_launch, build_ui, launch_options

demo = build_ui()

if __name__ == "__main__":
    before_launch()  # finish interrupted erasures; erase anonymous sessions a previous server left behind
    demo.launch(**launch_options())
