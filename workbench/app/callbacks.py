"""What the app's buttons do: each function calls the library and returns what the UI shows.

Identity comes from the server, never from the page: :func:`subject_id_for` derives a pseudonymous
subject id from the session (gradio's ``session_hash``, or the logged-in user when ``auth`` is set)
and a random key made when the process starts. A client cannot name another session's subject, and
the id says nothing about the person. Bad input raises ``gr.Error`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr

from workbench.errors import UserError

log = logging.getLogger(__name__)

_SECRET = secrets.token_bytes(32)  # per process: ids do not survive a restart, nor can they be guessed
_LOCK = threading.Lock()
_SESSIONS: dict[str, dict] = {}  # subject id -> {"spec_subject": {...}, "retention_days": int, "run_dir": str}

BACKBONE = "tiny-face"
QUICK_PROMPTS = {"with_identifier": ["a photo of {identifier} {class_noun}"],
                 "without_identifier": ["a photo of a {class_noun}"]}

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator everywhere else
    import spaces  # type: ignore[import-not-found]

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the platform
    def gpu(fn=None, **_kw):
        return fn if fn is not None else (lambda f: f)


# ---------------------------------------------------------------------------------------------------
# Identity

def session_key(request: gr.Request | None) -> str:
    """The logged-in user when ``auth`` is on, else the browser session."""
    if request is None:
        raise gr.Error("no session: open the app in a browser (or a gradio_client.Client)")
    user = getattr(request, "username", None)
    if user:
        return "user:" + str(user)
    session = getattr(request, "session_hash", None)
    if not session:
        raise gr.Error("no session id: reload the page")
    return "session:" + str(session)


def subject_id_for(request: gr.Request | None) -> str:
    key = session_key(request)
    return "app-" + hashlib.sha256(_SECRET + key.encode()).hexdigest()[:12]


def _state(sid: str) -> dict:
    with _LOCK:
        return _SESSIONS.setdefault(sid, {})


def _fail(exc: Exception) -> gr.Error:
    return gr.Error(str(exc) if isinstance(exc, (UserError, ValueError)) else f"{type(exc).__name__}: {exc}")


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
    from workbench.runner import backbone_resolution
    from workbench.spec import parse_spec

    spec = parse_spec({"version": 1, "name": "app", "subject": {"demo": "x"}, "recipes": [{"name": "none"}],
                       "backbone": BACKBONE})
    return backbone_resolution(spec)


def _upload_path(f) -> Path:
    return Path(f if isinstance(f, str) else getattr(f, "name", None) or f["path"])


def intake_photos(files, demo: str | None, consent: bool, retention_days: float | int | None,
                  request: gr.Request):
    """Take the uploads (or a demo person's photos) into this session's subject.

    Returns (markdown summary, gallery of accepted crops with captions, table of rejections).
    """
    from workbench.lifecycle import manifest
    from workbench.lifecycle.policy import set_retention
    from workbench.subjects.demo import demo_photos
    from workbench.subjects.intake import intake
    from workbench.subjects.store import SubjectStore

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
    sid = subject_id_for(request)
    state = _state(sid)
    store = SubjectStore(sid)
    before = state.get("spec_subject")
    if before and (before.get("demo") != demo if demo else "demo" in before):
        raise gr.Error("this session's subject already holds photos of someone else (a demo subject, or your "
                       "uploads): one subject per session; erase it on the Data tab first")
    try:
        set_retention(sid, {"default_days": days, "kinds": {}})
        resolution = _resolution()
        if demo:
            photos = demo_photos(demo)
            sources = [p for p, _ in photos]
            splits = {p.name: split for p, split in photos}
        else:
            sources = [_upload_path(f) for f in files]
            splits = None
            for p in sources:  # the uploaded copies are the subject's: erasure and retention delete them
                if p.exists():
                    manifest.register_external(sid, "app_temp", p)
        report = intake(sources, sid, resolution=resolution, splits=splits)
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    if demo:
        state["spec_subject"] = {"demo": demo, "id": sid}
    else:  # the runner takes the normalised photos back in from the store (idempotent: same hashes)
        record = store.read_record() or {}
        photos = [str(store.root / "photos" / f"{e['sha256']}.png") for e in record.get("accepted", [])]
        if photos:
            state["spec_subject"] = {"photos": photos, "id": sid}
    state["retention_days"] = days
    gallery = [(_temp_copy(sid, store.root / a.crop, "crops"), f"{a.source}: accepted ({a.split})")
               for a in report.accepted]
    rejected = [[r.source, r.reason] for r in report.rejected]
    summary = (f"**Subject `{sid}`**: {len(report.accepted)} accepted, {len(report.rejected)} rejected; "
               f"{report.train} training and {report.holdout} holdout photos in total. Kept {days} days.")
    return summary, gallery, rejected


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

def recipe_choices() -> list[str]:
    from workbench.recipes.registry import load_all

    return [name for name in load_all() if name != "none"]


def build_spec(sid: str, recipes: list[str], steps: int, images_per_prompt: int, sampling_steps: int,
               days: int):
    from workbench.errors import SpecError
    from workbench.spec import parse_spec

    state = _state(sid)
    if "spec_subject" not in state:
        raise gr.Error("no subject yet: take in photos (or a demo subject) on the Subject tab first")
    entries = [{"name": "none"}]
    for name in recipes or []:
        entries.append({"name": name, "params": {"steps": int(steps)}})
    data = {
        "version": 1, "name": "app", "subject": state["spec_subject"], "backbone": BACKBONE, "device": "auto",
        "recipes": entries, "prompts": dict(QUICK_PROMPTS), "images_per_prompt": int(images_per_prompt),
        "sampling": {"steps": int(sampling_steps), "batch_size": 8},
        "metrics": {"encoders": ["sface"], "mia_attacks": ["loss"]},
        "tracking": {"wandb": "off"}, "retention": {"default_days": int(days)},
    }
    try:
        return parse_spec(data, source="app")
    except SpecError as exc:
        raise gr.Error(str(exc)) from None


@gpu
def run_comparison(recipes: list[str], steps: float, images_per_prompt: float, sampling_steps: float,
                   request: gr.Request, progress=gr.Progress()):  # noqa: B008 - gradio's injection idiom
    """Train, sample and measure ``none`` + the chosen recipes; returns the per-recipe status (markdown)."""
    from workbench.runner import run_experiment

    sid = subject_id_for(request)
    state = _state(sid)
    spec = build_spec(sid, recipes, int(steps), int(images_per_prompt), int(sampling_steps),
                      state.get("retention_days", 30))

    def report(stage: str, fraction: float) -> None:
        progress(fraction, desc=stage)

    started = time.time()
    try:
        outcome = run_experiment(spec, progress=report)
    except Exception as exc:  # noqa: BLE001 - the run as a whole failed (e.g. no training photos)
        raise _fail(exc) from None
    state["run_dir"] = str(outcome.run_dir)
    lines = [f"**Run finished in {time.time() - started:.1f} s** ({'all ok' if outcome.ok else 'with errors'})", ""]
    for name, s in outcome.status.items():
        if s.get("ok"):
            lines.append(f"- `{name}`: ok, {s.get('images')} images, {s.get('seconds')} s")
        else:
            lines.append(f"- `{name}`: **failed**: {s.get('error')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Results and Report tabs

def _run_dir(sid: str) -> Path:
    run = _state(sid).get("run_dir")
    if not run or not (Path(run) / "results.json").is_file():
        raise gr.Error("no results yet: run a comparison on the Run tab first")
    return Path(run)


def show_results(request: gr.Request):
    """The scorecard (markdown table) and the report's figures."""
    from workbench.report.html import PLOTS_DIR
    from workbench.report.scorecard import scorecard, to_markdown

    sid = subject_id_for(request)
    run = _run_dir(sid)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    card = scorecard(results)
    table = to_markdown(card) + "\n\n**Membership inference**\n\n" + to_markdown(card, mia=True)
    figures = [_temp_copy(sid, p, "plots") for p in sorted((run / PLOTS_DIR).glob("*.png"))]
    return table, [(f, Path(f).stem) for f in figures]


def report_files(request: gr.Request) -> list[str]:
    """report.html and results.json of this session's last run, to download."""
    from workbench.report.html import REPORT_FILE

    sid = subject_id_for(request)
    run = _run_dir(sid)
    return [_temp_copy(sid, run / name, "report") for name in (REPORT_FILE, "results.json")
            if (run / name).is_file()]


# ---------------------------------------------------------------------------------------------------
# Data tab

def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t else "never"


def stored_data(request: gr.Request):
    """What is stored for this session's subject: (markdown, rows of [kind, files, bytes, next expiry])."""
    from workbench.lifecycle import manifest

    sid = subject_id_for(request)
    arts = manifest.live(sid)
    kinds: dict[str, list] = {}
    for a in arts:
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


def erase_now(request: gr.Request):
    """Erase this session's subject everywhere; returns (markdown with verification, receipt JSON)."""
    from workbench.lifecycle.erasure import erase
    from workbench.lifecycle.verification import verify_erasure

    sid = subject_id_for(request)
    try:
        receipt = erase(sid)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from None
    with _LOCK:
        _SESSIONS.pop(sid, None)
    check = verify_erasure(sid)
    text = (f"**Erased subject `{sid}`**: {receipt.files_deleted} files deleted, key destroyed: "
            f"{receipt.key_destroyed}. Verification: **{'ok' if check['ok'] else 'RESIDUAL FOUND'}**"
            f" ({len(check.get('residual', []))} residual).")
    return text, json.loads(receipt.to_json()) | {"verify_ok": bool(check["ok"])}
