"""What the app's buttons do: each function calls the library and returns what the UI shows.

Identity comes from the server, never from the page (:mod:`workbench.app.identity`): every callback takes
gradio's ``request`` (and, on Spaces, the OAuth ``profile``) and works on that session's pseudonymous
subject only. What the app remembers per subject is in :mod:`workbench.app.sessions`; the Recipes tab's
spec is made by :mod:`workbench.app.form`. Bad input raises ``gr.Error`` with the reason.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr

from workbench.app import form, sessions
from workbench.app.identity import Identity, identify
from workbench.errors import Interrupted, UserError
from workbench.lifecycle.audit_log import acting_as

log = logging.getLogger(__name__)

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator everywhere else
    import spaces  # type: ignore[import-not-found]

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the platform
    def gpu(fn=None, **_kw):
        return fn if fn is not None else (lambda f: f)


def who(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> Identity:
    try:
        return identify(request, profile)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def _fail(exc: Exception) -> gr.Error:
    return gr.Error(str(exc) if isinstance(exc, (UserError, ValueError)) else f"{type(exc).__name__}: {exc}")


def whoami(request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
    """One line for the page header: how this session is identified (no name is shown or stored)."""
    ident = who(request, profile)
    if ident.logged_in:
        return (f"Signed in ({ident.how}): your data is kept as subject `{ident.subject_id}` across reloads "
                "until you erase it or its retention ends.")
    return (f"Not signed in: your data is tied to this browser tab (subject `{ident.subject_id}`) and erased "
            "when you close or reload it.")


# ---------------------------------------------------------------------------------------------------
# Subject tab

def demo_choices() -> list[str]:
    from workbench.subjects.demo import demo_subjects

    try:
        return demo_subjects()
    except Exception as exc:  # noqa: BLE001 - no LFW copy: the app still takes uploads
        log.warning("no demo subjects: %s", exc)
        return []


def _resolution() -> int:
    from workbench.backbones.registry import backbone_resolution

    return backbone_resolution(form.DEFAULT_BACKBONE)


def _upload_path(f) -> Path:
    return Path(f if isinstance(f, str) else getattr(f, "name", None) or f["path"])


def intake_photos(files, demo: str | None, consent: bool, retention_days: float | int | None,
                  request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Take the uploads (or a demo person's photos) into this session's subject.

    Returns (markdown summary, gallery of accepted crops with captions, table of rejections).
    """
    from workbench.lifecycle.erasure import working_on
    from workbench.lifecycle.policy import set_retention

    if not consent:
        raise gr.Error("consent is required: tick the box to confirm the person in the photos agreed "
                       "to this processing (or that they are a public demo subject)")
    files = [f for f in (files or []) if f]
    if bool(files) == bool(demo):
        raise gr.Error("give either your photos or a demo subject, not both and not neither")
    try:
        days = int(retention_days if retention_days is not None else 30)
    except (TypeError, ValueError):
        raise gr.Error(f"retention days: {retention_days!r} is not a whole number") from None
    if days < 0 or days > 3650:
        raise gr.Error(f"retention days: {days} is outside 0-3650")
    sid = who(request, profile).subject_id
    before = sessions.state(sid).get("spec_subject")
    if before and (before.get("demo") != demo if demo else "demo" in before):
        raise gr.Error("this session's subject already holds photos of someone else (a demo subject, or your "
                       "uploads): one subject per session; erase it on the Data tab first")
    try:
        with acting_as(sid):
            with working_on(sid, must_exist=False, decrypt=False):  # the app encrypts every subject at rest
                set_retention(sid, {"default_days": days, "kinds": {}, "encrypt": form.ENCRYPT})
            with working_on(sid, must_exist=False):  # ... so intake writes into a decrypted working copy
                report, gallery = _intake(sid, demo, files, days)
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    rejected = [[r.source, r.reason] for r in report.rejected]
    summary = (f"**Subject `{sid}`**: {len(report.accepted)} accepted, {len(report.rejected)} rejected; "
               f"{report.train} training and {report.holdout} holdout photos in total. Kept {days} days.")
    return summary, gallery, rejected


def _intake(sid: str, demo: str | None, files: list, days: int):
    """Intake into the session's subject and its app state → (intake report, gallery of accepted crops)."""
    from workbench.lifecycle import manifest
    from workbench.lifecycle.sealed import at_rest
    from workbench.subjects.demo import subject_sources
    from workbench.subjects.intake import intake
    from workbench.subjects.store import SubjectStore

    sources, splits = subject_sources(demo, None if demo else [_upload_path(f) for f in files])
    if not demo:
        for p in sources:  # the uploaded copies are the subject's: erasure and retention delete them
            if p.exists():
                manifest.register_external(sid, "app_temp", p)
    report = intake(sources, sid, resolution=_resolution(), splits=splits)
    store = SubjectStore(sid)
    if demo:
        sessions.update(sid, spec_subject={"demo": demo, "id": sid}, retention_days=days)
    else:  # the runner takes the normalised photos back in from the store (idempotent: same hashes)
        photos = [str(at_rest(p)) for p in store.accepted_photos()]
        sessions.update(sid, retention_days=days, **({"spec_subject": {"photos": photos, "id": sid}}
                                                     if photos else {}))
    gallery = [(_temp_copy(sid, store.root / a.crop, "crops"), f"{a.source}: accepted ({a.split})")
               for a in report.accepted]
    return report, gallery


def _temp_copy(sid: str, src: Path, group: str) -> str:
    """A copy of a data-root file in the app's temp store (the data root is blocked from serving)."""
    from workbench.lifecycle import manifest
    from workbench.lifecycle.stores import stores

    folder = stores()["app_temp"] / "workbench" / sid / group
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    shutil.copyfile(src, dest)
    manifest.register_external(sid, "app_temp", dest)
    return str(dest)


# ---------------------------------------------------------------------------------------------------
# Recipes and Run tabs

def params_for(recipes: list[str], text: str) -> str:
    """The recipe-parameters text after the ticked recipes changed (kept edits, defaults for new ones)."""
    return form.params_text(recipes, text)


@gpu
def run_comparison(recipes: list[str], params_text: str, backbone: str, with_identifier: str,
                   without_identifier: str, images_per_prompt: float, sampling_steps: float,
                   encoders: list[str], mia_attacks: list[str], wandb: str, photos: str, protect_epsilon: float,
                   protect_rounds: float, executor: str = "local", request: gr.Request = None,
                   profile: gr.OAuthProfile | None = None,
                   progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - gradio's injection idiom
    """Train, sample and measure ``none`` + the ticked recipes; returns the per-recipe status (markdown).

    Cancel (:func:`cancel_run`) stops it at its next training step or stage; nothing of a cancelled run is shown
    as a result (the Results tab keeps the last complete run)."""
    from workbench.runner import run_experiment

    sid = who(request, profile).subject_id
    state = sessions.state(sid)
    if "spec_subject" not in state:
        raise gr.Error("no subject yet: take in photos (or a demo subject) on the Subject tab first")
    values = form.RecipeForm(recipes=list(recipes or []), params_text=params_text, backbone=backbone,
                             with_identifier=with_identifier, without_identifier=without_identifier,
                             images_per_prompt=int(images_per_prompt), sampling_steps=int(sampling_steps),
                             encoders=tuple(encoders or ()), mia_attacks=tuple(mia_attacks or ()), wandb=wandb,
                             photos=photos or "clean", protect_epsilon=float(protect_epsilon),
                             protect_rounds=int(protect_rounds), executor=executor or "local")
    try:
        spec = form.build_spec(state["spec_subject"], values, int(state.get("retention_days", 30)))
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    guard = sessions.guard(sid)
    if guard.busy.locked():  # a cancelled run stops at its next step or stage; then this one starts
        progress(0.0, desc="waiting for this subject's previous run to stop")
    if not guard.busy.acquire(timeout=600):
        raise gr.Error("a comparison of this subject is still running; cancel it or wait for it to finish")
    stage, started = "start", time.time()

    last_counts = ""

    def report(name: str, fraction: float) -> None:
        nonlocal stage, last_counts
        guard.check()  # raises Cancelled when the user pressed Cancel
        stage = name.splitlines()[0] if name else name
        if stage.startswith("rows:"):  # Ray: the counts line, then one line per running task
            last_counts = stage
        progress(fraction, desc=" · ".join(line.strip() for line in name.splitlines()))

    try:
        guard.cancel.clear()
        with acting_as(sid):
            outcome = run_experiment(spec, progress=report, should_stop=guard.cancel.is_set)
        sessions.update(sid, run_dir=str(outcome.run_dir))
    except Interrupted:  # the cancel, seen at a stage boundary or at a training step
        return (f"**Cancelled** during `{stage}` after {time.time() - started:.1f} s. Nothing of this run is shown "
                "as a result: the Results tab keeps your last complete run, if any. Models finished before the "
                "cancel stay in your subject's store, and an identical run reuses them.")
    except Exception as exc:  # noqa: BLE001 - the run as a whole failed (e.g. no training photos)
        raise _fail(exc) from None
    finally:
        guard.cancel.clear()
        guard.busy.release()
    lines = [f"**Run finished in {time.time() - started:.1f} s** ({'all ok' if outcome.ok else 'with errors'})", ""]
    if values.executor != "local":  # the executor's last progress line: its counts of rows
        lines[1:1] = [f"On {values.executor}: {last_counts}", ""]
    for name, s in outcome.status.items():
        if s.get("ok"):
            lines.append(f"- `{name}`: ok, {s.get('images')} images, {s.get('seconds')} s")
        else:
            lines.append(f"- `{name}`: **failed**: {s.get('error')}")
    return "\n".join(lines)


def cancel_run(request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
    """Ask this session's running comparison to stop (at its next training step or stage)."""
    sid = who(request, profile).subject_id
    if sessions.request_cancel(sid):
        return "**Cancelling…** the run stops at its next training step or stage; nothing of it will be shown."
    return "No comparison of yours is running."


# ---------------------------------------------------------------------------------------------------
# Results and Report tabs

def _run_dir(sid: str) -> Path:
    run = sessions.state(sid).get("run_dir")
    if not run or not (Path(run) / "results.json").is_file():
        raise gr.Error("no results yet: run a comparison on the Run tab first")
    return Path(run)


def show_results(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """The scorecard (markdown table) and the report's figures."""
    from workbench.report.html import PLOTS_DIR
    from workbench.report.scorecard import scorecard, to_markdown
    from workbench.results import load_results

    sid = who(request, profile).subject_id
    run = _run_dir(sid)
    card = scorecard(load_results(run))
    table = to_markdown(card) + "\n\n**Membership inference**\n\n" + to_markdown(card, mia=True)
    with acting_as(sid):
        figures = [_temp_copy(sid, p, "plots") for p in sorted((run / PLOTS_DIR).glob("*.png"))]
    return table, [(f, Path(f).stem) for f in figures]


def report_files(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """report.html and results.json of this session's last run, and where its W&B mirror is (markdown)."""
    from workbench.report.html import REPORT_FILE
    from workbench.tracking import mirror_status

    sid = who(request, profile).subject_id
    run = _run_dir(sid)
    with acting_as(sid):
        files = [_temp_copy(sid, run / name, "report") for name in (REPORT_FILE, "results.json")
                 if (run / name).is_file()]
    return files, wandb_note(mirror_status(run))


def wandb_note(status: dict) -> str:
    """The Report tab's line about Weights & Biases, from :func:`workbench.tracking.mirror_status`."""
    mode = status["mode"]
    if mode == "online" and status.get("url"):
        return f"**Weights & Biases**: [open this run in W&B]({status['url']}) (project `{status['project']}`)."
    if mode == "off":
        return "**Weights & Biases**: tracking was off for this run; nothing was sent anywhere."
    if mode == "offline" and status.get("offline_run"):
        return ("**Weights & Biases**: offline. The W&B run (metrics and tables only, no images) stays on the "
                "server that runs this app; nothing was uploaded. Only whoever runs the server can upload it to "
                f"their W&B account (offline run `{Path(status['offline_run']).name}`); your results are all in "
                "report.html and results.json above.")
    return ("**Weights & Biases**: no mirror was written for this run (W&B is turned off on this server, or the "
            "mirror failed). Your results are complete: report.html and results.json above hold all of them.")


# ---------------------------------------------------------------------------------------------------
# Data tab and the end of a session

def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t else "never"


def stored_data(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """What is stored for this session's subject: (markdown, rows of [kind, files, bytes, next expiry])."""
    from workbench.lifecycle import manifest

    sid = who(request, profile).subject_id
    kinds: dict[str, list] = {}
    for a in manifest.live(sid):
        k = kinds.setdefault(a.kind, [0, 0, None])
        k[0] += 1
        k[1] += a.size
        if a.expires is not None:
            k[2] = a.expires if k[2] is None else min(k[2], a.expires)
    rows = [[kind, n, size, _when(exp)] for kind, (n, size, exp) in sorted(kinds.items())]
    if not rows:
        return f"Nothing is stored for this session's subject (`{sid}`).", []
    total = sum(r[1] for r in rows)
    return f"Subject `{sid}`: {total} files stored.", rows


def erase_now(request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Erase this session's subject everywhere; returns (markdown with verification, receipt JSON)."""
    import json

    from workbench.lifecycle.erasure import NothingToErase, erase
    from workbench.lifecycle.verification import verify_erasure

    sid = who(request, profile).subject_id
    if sessions.running(sid):
        raise gr.Error("a comparison of this subject is running: cancel it on the Run tab first, then erase")
    try:
        with acting_as(sid):
            receipt = erase(sid)
            check = verify_erasure(sid)
    except NothingToErase:
        return "Nothing to erase: no data is stored for this session.", None
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    text = (f"**Erased subject `{sid}`**: {receipt.files_deleted} files deleted, key destroyed: "
            f"{receipt.key_destroyed}. Verification: **{'ok' if check['ok'] else 'RESIDUAL FOUND'}**"
            f" ({len(check.get('residual', []))} residual).")
    return text, json.loads(receipt.to_json()) | {"verify_ok": bool(check["ok"])}


def end_session(request: gr.Request, profile: gr.OAuthProfile | None = None) -> None:
    """On a closed or reloaded tab (``demo.unload``): erase an anonymous session's subject, with a receipt
    and audit-log lines, after stopping its run. A signed-in user's data stays (retention still applies)."""
    try:
        ident = identify(request, profile)
    except ValueError:
        return
    if not ident.logged_in:
        sessions.end_anonymous(ident.subject_id)


# ---------------------------------------------------------------------------------------------------
# Provider tab (issue #15): the questionnaire graded, the uploads audited; logic in workbench.provider

PROVIDER_UPLOADS = {"generated": "the provider's headshots", "train": "the selfies you sent the provider",
                    "holdout": "photos of you the provider never had"}


def _provider_dir(sid: str) -> Path:
    """This session's Provider folder in the app's temp store, registered whole: erasure deletes it all."""
    from workbench.lifecycle import manifest
    from workbench.lifecycle.stores import stores

    folder = stores()["app_temp"] / "workbench" / sid / "provider"
    folder.mkdir(parents=True, exist_ok=True)
    manifest.register_external(sid, "app_temp", folder)
    return folder


def _provider_audit(sid: str, uploads: dict[str, list]) -> list:
    """``workbench audit`` of the uploads (copied under content-hash names), as evidence; [] without uploads."""
    import tempfile

    from workbench.lifecycle import manifest
    from workbench.metrics.audit import audit
    from workbench.provider.evidence import read_data

    if not any(uploads.values()):
        return []
    missing = [what for group, what in PROVIDER_UPLOADS.items() if not uploads.get(group)]
    if missing:
        raise gr.Error(f"to audit the provider's headshots, also give {' and '.join(missing)} "
                       "(or remove the uploads to grade the answers alone)")
    root = Path(tempfile.mkdtemp(dir=_provider_dir(sid), prefix="audit-"))
    for group, files in uploads.items():
        (root / group).mkdir()
        for f in files:
            src = _upload_path(f)
            manifest.register_external(sid, "app_temp", src)  # gradio's copy of the upload is the subject's too
            dest = root / group / manifest.sha256_file(src)[:32]  # user file names never become paths
            shutil.copyfile(src, dest)
            manifest.register_external(sid, "app_temp", dest)
    result = audit(root / "train", root / "holdout", root / "generated", progress=False, n_resamples=1000)
    return read_data(result, "audit of the uploaded photos")


def provider_check(data: dict, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Grade the questionnaire (``data``: the tab's inputs by component) beside an audit of the uploads.

    Returns (summary markdown, questions to send, request letters, [provider.json, provider.html])."""
    from workbench.lifecycle import manifest
    from workbench.provider import questionnaire as q
    from workbench.provider.check import check, write_outputs

    sid = who(request, profile).subject_id
    values = {getattr(c, "elem_id", None) or "": v for c, v in data.items()}
    answers = {k.removeprefix(q.ELEM_PREFIX): v for k, v in values.items() if k.startswith(q.ELEM_PREFIX)}
    uploads = {g: [f for f in (values.get(f"provider-{g}") or []) if f] for g in PROVIDER_UPLOADS}
    try:
        assessment = q.assessment_from_form(values.get("provider-name") or "", answers)
        with acting_as(sid):
            report = check(assessment, _provider_audit(sid, uploads))
            files = write_outputs(report, _provider_dir(sid) / "report")
            for f in files:
                manifest.register_external(sid, "app_temp", f)
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    return q.summary_markdown(report), q.questions_text(report), q.letters_text(report), [str(f) for f in files]
