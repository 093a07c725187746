"""The app's layout: seven tabs wired to :mod:`workbench.app.callbacks`. No work at import time."""

from __future__ import annotations

import os

import workbench.app  # noqa: F401 - sets gradio's environment before gradio is imported
from workbench import paths

import gradio as gr  # isort: skip

from workbench.app import callbacks as cb, form  # isort: skip

MAX_FILE_SIZE = "10mb"
DELETE_CACHE = (3600, 24 * 3600)  # every hour, delete cached files older than a day (and all at shutdown)
CSS = """
.scorecard table { display: block; overflow-x: auto; }
.scorecard th, .scorecard td { word-break: normal; overflow-wrap: normal; hyphens: none; }
"""  # wide scorecards scroll sideways instead of breaking words letter by letter
DATA_POLICY = """\
**How long your data stays.** Signed in (Hugging Face on Spaces, or the app's password login): your subject
is tied to your account through a pseudonymous id (never your name) and comes back after a reload, until you
erase it or its retention ends. Not signed in: your subject is tied to this browser tab, and closing or
reloading the tab erases it at once, with an erasure receipt in the audit log. Anything left behind (a
crashed browser, a restarted server) is deleted when the server starts again or by the retention purge, after
the days chosen on the Subject tab. *Erase now* deletes everything immediately and shows the receipt.
"""


def on_space() -> bool:
    """On a Hugging Face Space (gradio's own test: ``SYSTEM=spaces`` and ``SPACE_ID``): show the HF login."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


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
            "share": False, "show_error": True, "css": CSS}


def before_launch() -> list[str]:
    """Call once before serving: finish interrupted erasures and erase anonymous subjects a previous server
    left behind (their sessions ended with it). Returns the erased subject ids."""
    from workbench.app.sessions import erase_anonymous_leftovers
    from workbench.lifecycle import startup

    startup()
    return erase_anonymous_leftovers()


def _recipes_tab() -> dict:
    with_prompts, without_prompts = form.default_prompts()
    gr.Markdown("The untouched base model (`none`) always runs as the control: each ticked recipe is compared "
                "with it. Every setting starts at the workbench's default.")
    with gr.Row():
        recipes = gr.CheckboxGroup(label="Recipes", choices=form.recipe_choices(), value=["lora"], scale=2)
        backbone = gr.Dropdown(label="Backbone", choices=form.backbone_choices(), value=form.DEFAULT_BACKBONE,
                               allow_custom_value=True, scale=1,
                               info="a registered backbone, a diffusers hub id (org/name)"
                               + ("" if on_space() else " or a local diffusers folder"))
    with gr.Row():
        with_id = gr.Textbox(label="Prompts that ask for the person (one per line)", value=with_prompts, lines=4,
                             info="must contain {identifier}; may use {class_noun}")
        without_id = gr.Textbox(label="Prompts that do not (concept bleed; one per line)", value=without_prompts,
                                lines=4, info="must not contain {identifier}")
    with gr.Row():
        images = gr.Slider(1, 8, value=1, step=1, label="Images per prompt")
        sampling = gr.Slider(2, 50, value=10, step=1, label="Sampling steps")
    with gr.Row():
        encoders = gr.CheckboxGroup(label="Identity encoders", choices=form.encoder_choices(),
                                    value=form.DEFAULT_ENCODERS)
        attacks = gr.CheckboxGroup(label="Membership-inference attacks", choices=form.attack_choices(),
                                   value=form.DEFAULT_ATTACKS)
        wandb = gr.Radio(label="Weights & Biases", choices=["off", "offline", "online"], value="offline",
                         info="offline: stays on the server; online: the server's own W&B account")
    with gr.Row():
        photos = gr.Radio(label="Training photos", choices=list(form.PHOTO_CHOICES), value="clean",
                          info="protected: an Anti-DreamBooth (ASPL) perturbation of the training photos first; "
                               "both: each recipe on clean and on protected photos")
        epsilon = gr.Slider(0.01, 0.1, value=0.05, step=0.01, label="Protection budget ε (L-inf, [-1, 1] scale)")
        rounds = gr.Slider(1, 50, value=10, step=1, label="Protection rounds (ASPL)")
    params = gr.Code(label="Recipe parameters (YAML or JSON)", language="yaml", interactive=True,
                     value=form.params_text(["lora"]))
    recipes.change(cb.params_for, [recipes, params], [params], api_name=False)
    return {"recipes": recipes, "params": params, "backbone": backbone, "with_id": with_id,
            "without_id": without_id, "images": images, "sampling": sampling, "encoders": encoders,
            "attacks": attacks, "wandb": wandb, "photos": photos, "epsilon": epsilon, "rounds": rounds}


def _provider_tab() -> set:
    """Issue #15: the provider questionnaire (defaults unknown), optional uploads for an audit; returns the
    inputs as a set (the callback gets them as a dict by component, named by ``elem_id``)."""
    from workbench.provider import questionnaire as q

    gr.Markdown("Grade what a headshot provider states against the criteria of `docs/PROVIDERS.md` (ToS;DR's "
                "rule; Mozilla-style warnings per domain), beside what its headshots measurably leak. Leave an "
                "answer `unknown` when the provider does not say. An assessment aid, not legal advice.")
    inputs = {gr.Textbox(label="Provider", placeholder="the provider's name", elem_id="provider-name")}
    with gr.Accordion("Questionnaire", open=True):
        with gr.Row(equal_height=False):
            for f in q.fields():
                kw = {"label": f.label, "info": f.info, "value": "unknown", "elem_id": q.ELEM_PREFIX + f.id,
                      "min_width": 240}
                inputs.add(gr.Radio(list(f.choices), **kw) if f.choices else gr.Textbox(**kw))
    with gr.Accordion("Optional: audit the provider's headshots (kept only as long as this session's data)",
                      open=False):
        with gr.Row():
            for group, what in cb.PROVIDER_UPLOADS.items():
                inputs.add(gr.File(label=what[0].upper() + what[1:], file_count="multiple", file_types=["image"],
                                   type="filepath", elem_id=f"provider-{group}"))
    return inputs


def build_ui() -> gr.Blocks:
    """The app: choices come from the registries and the spec (cheap: no models load)."""
    with gr.Blocks(title="Headshot privacy workbench", analytics_enabled=False,
                   delete_cache=DELETE_CACHE) as demo:
        with gr.Row():
            gr.Markdown("# Headshot privacy workbench\nCompare personalised fine-tuning recipes on one subject: "
                        "identity fidelity, leakage, and deletion.")
            if on_space():
                gr.LoginButton(scale=0)
        who_md = gr.Markdown()
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
            r = _recipes_tab()
        with gr.Tab("Run", id="run"):
            with gr.Row():
                run_btn = gr.Button("Run comparison", variant="primary", scale=3)
                cancel_btn = gr.Button("Cancel", variant="stop", scale=1)
            executor = gr.Radio(label="Run on", choices=["local", "ray"], value="local",
                                info="local: in this process; ray: one Ray task per recipe row (a local Ray on "
                                     "127.0.0.1, or the cluster at $WORKBENCH_RAY_ADDRESS), live lines per task")
            run_md = gr.Markdown()
        with gr.Tab("Results", id="results"):
            results_btn = gr.Button("Show results")
            table = gr.Markdown(elem_classes=["scorecard"])
            figures = gr.Gallery(label="Figures (as in the HTML report; click to enlarge)", columns=3, height="auto",
                                 object_fit="contain")
        with gr.Tab("Report", id="report"):
            report_btn = gr.Button("Prepare downloads")
            downloads = gr.File(label="report.html and results.json", file_count="multiple", interactive=False)
            wandb_md = gr.Markdown()
        with gr.Tab("Data", id="data"):
            gr.Markdown(DATA_POLICY)
            data_btn = gr.Button("What is stored?")
            data_md = gr.Markdown()
            data_table = gr.Dataframe(headers=["kind", "files", "bytes", "first expiry"], interactive=False)
            erase_btn = gr.Button("Erase now", variant="stop")
            erase_md = gr.Markdown()
            receipt = gr.JSON(label="Erasure receipt")

        with gr.Tab("Provider", id="provider"):
            provider_inputs = _provider_tab()
            provider_btn = gr.Button("Grade the provider", variant="primary")
            provider_md = gr.Markdown()
            with gr.Row():
                provider_questions = gr.Textbox(label="Questions to send the provider", lines=8, interactive=False,
                                                buttons=["copy"], elem_id="provider-questions")
                provider_letters = gr.Textbox(label="Requests: access (Art. 15), erasure (Art. 17), portability "
                                              "(Art. 20)", lines=8, interactive=False, buttons=["copy"],
                                              elem_id="provider-letters")
            provider_files = gr.File(label="provider.json and provider.html", file_count="multiple",
                                     interactive=False)

        demo.load(cb.whoami, None, [who_md], api_name="whoami")
        demo.unload(cb.end_session)
        intake_btn.click(cb.intake_photos, [files, demo_name, consent, days], [intake_md, crops, rejected],
                         api_name="intake")
        run_inputs = [r[k] for k in ("recipes", "params", "backbone", "with_id", "without_id", "images", "sampling",
                                     "encoders", "attacks", "wandb", "photos", "epsilon", "rounds")] + [executor]
        run_event = run_btn.click(cb.run_comparison, run_inputs, [run_md], api_name="run", concurrency_limit=1)
        cancel_btn.click(cb.cancel_run, None, [run_md], api_name="cancel_run", cancels=[run_event])
        results_btn.click(cb.show_results, None, [table, figures], api_name="results")
        report_btn.click(cb.report_files, None, [downloads, wandb_md], api_name="report")
        data_btn.click(cb.stored_data, None, [data_md, data_table], api_name="data")
        provider_btn.click(cb.provider_check, provider_inputs,
                           [provider_md, provider_questions, provider_letters, provider_files], api_name=False)
        erase_btn.click(cb.erase_now, None, [erase_md, receipt], api_name="erase").then(
            cb.stored_data, None, [data_md, data_table], api_name=False)
    return demo
