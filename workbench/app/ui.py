"""The app's layout: six tabs wired to :mod:`workbench.app.callbacks`. No work at import time."""

from __future__ import annotations

import workbench.app  # noqa: F401 - sets gradio's environment before gradio is imported
from workbench import paths

import gradio as gr  # isort: skip

from workbench.app import callbacks as cb  # isort: skip

MAX_FILE_SIZE = "10mb"
DELETE_CACHE = (3600, 24 * 3600)  # every hour, delete cached files older than a day (and all at shutdown)


def blocked_paths() -> list[str]:
    """The data root; when the app's temp store lies inside it (the default), every entry but that one."""
    from workbench.lifecycle.stores import BOOKKEEPING_ROOT, stores

    home, temp = paths.home(), stores()["app_temp"]
    if not temp.is_relative_to(home):
        return [str(home)]
    # gradio checks blocked paths first, uploads included: block the data root's stores around the temp
    # folder (subjects and runs made later live in folders listed here, which exist from the start)
    for folder in (paths.subjects_root(), paths.runs_root()):
        folder.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in home.iterdir()} | set(BOOKKEEPING_ROOT) | {"wandb", "models", "cache"}
    return sorted(str(home / n) for n in names if not temp.is_relative_to(home / n))


def launch_options() -> dict:
    """The privacy settings every launch uses (docs/PRIVACY.md "The app"); no server_name here."""
    return {"max_file_size": MAX_FILE_SIZE, "allowed_paths": [], "blocked_paths": blocked_paths(),
            "share": False, "show_error": True}


def build_ui() -> gr.Blocks:
    """The app: choices come from the demo-subject list and the recipe registry (cheap: no models load)."""
    with gr.Blocks(title="Headshot privacy workbench", analytics_enabled=False,
                   delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# Headshot privacy workbench\nCompare personalised fine-tuning recipes on one subject: "
                    "identity fidelity, leakage, and deletion. Your data is tied to this browser session.")
        with gr.Tab("Subject", id="subject"):
            with gr.Row():
                files = gr.File(label="Photos of one person (JPEG/PNG)", file_count="multiple",
                                file_types=["image"], type="filepath")
                demo_name = gr.Dropdown(label="…or a demo subject (LFW)", choices=cb.demo_choices(), value=None)
            consent = gr.Checkbox(label="The person in these photos consented to this processing", value=False)
            days = gr.Number(label="Keep the data for (days)", value=30, precision=0, minimum=0, maximum=3650)
            intake_btn = gr.Button("Take in photos", variant="primary")
            intake_md = gr.Markdown()
            crops = gr.Gallery(label="Accepted (aligned crops)", columns=8, height="auto")
            rejected = gr.Dataframe(headers=["photo", "reason rejected"], label="Rejected", interactive=False)
        with gr.Tab("Recipes", id="recipes"):
            gr.Markdown("The untouched base model (`none`) always runs as the control.")
            recipes = gr.CheckboxGroup(label="Recipes", choices=cb.recipe_choices(), value=["lora"])
            steps = gr.Slider(1, 400, value=50, step=1, label="Training steps per recipe")
            images = gr.Slider(1, 8, value=1, step=1, label="Images per prompt")
            sampling = gr.Slider(2, 50, value=10, step=1, label="Sampling steps")
        with gr.Tab("Run", id="run"):
            run_btn = gr.Button("Run comparison", variant="primary")
            run_md = gr.Markdown()
        with gr.Tab("Results", id="results"):
            results_btn = gr.Button("Show results")
            table = gr.Markdown()
            figures = gr.Gallery(label="Figures", columns=3, height="auto")
        with gr.Tab("Report", id="report"):
            report_btn = gr.Button("Prepare downloads")
            downloads = gr.File(label="report.html and results.json", file_count="multiple", interactive=False)
        with gr.Tab("Data", id="data"):
            data_btn = gr.Button("What is stored?")
            data_md = gr.Markdown()
            data_table = gr.Dataframe(headers=["kind", "files", "bytes", "first expiry"], interactive=False)
            erase_btn = gr.Button("Erase now", variant="stop")
            erase_md = gr.Markdown()
            receipt = gr.JSON(label="Erasure receipt")

        intake_btn.click(cb.intake_photos, [files, demo_name, consent, days], [intake_md, crops, rejected],
                         api_name="intake")
        run_btn.click(cb.run_comparison, [recipes, steps, images, sampling], [run_md], api_name="run",
                      concurrency_limit=1)
        results_btn.click(cb.show_results, None, [table, figures], api_name="results")
        report_btn.click(cb.report_files, None, [downloads], api_name="report")
        data_btn.click(cb.stored_data, None, [data_md, data_table], api_name="data")
        erase_btn.click(cb.erase_now, None, [erase_md, receipt], api_name="erase")
    return demo
