"""The model file: export a personalised artifact as a ``.tar`` bundle with a model card; import it back.

Bundle layout (a plain, uncompressed tar; regular files only)::

    MODEL_CARD.md      recipe, backbone, training-photo hashes, leakage scores, retention deadline, and
                       plainly what leaking the file would expose
    bundle.json        the same facts as data + sha256 and size of every file under artifact/
    artifact/          the recipe's artifact folder: DONE.json + weights, as written by the engine

:func:`import_bundle` treats the tar as hostile: only regular files and folders with plain relative
names (no absolute paths, ``..``, links, devices), no duplicate names, at most :data:`MAX_MEMBERS`
entries and :data:`MAX_BUNDLE_BYTES` bytes; every file must match its hash in ``bundle.json`` and the
weights must match ``DONE.json``'s ``param_hash``. The artifact is restored under the subject's store
(``models/imported-<param_hash[:16]>/artifact``), where :func:`load_personalised` loads it, and is
registered (so retention and erasure cover it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import audit_log, manifest
from workbench.modelfile.archive import Limits, check_tar_members

BUNDLE_VERSION = 1
CARD = "MODEL_CARD.md"
META = "bundle.json"
ARTIFACT = "artifact"
MAX_BUNDLE_BYTES = 16 << 30  # an SDXL full fine-tune in fp32 is ~14 GB
MAX_MEMBERS = 4096
MAX_META_BYTES = 4 << 20
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
NOT_MEASURED = "not measured"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ---------------------------------------------------------------------------------------------------
# Export


def _training_hashes(folder: Path, subject_id: str) -> tuple[list[str], str]:
    job = folder.parent / "job.json"
    if job.is_file():
        hashes = json.loads(job.read_text(encoding="utf-8")).get("train_images")
        if isinstance(hashes, list):
            return sorted(hashes), "the training job (job.json)"
    crops = sorted({a.sha256 for a in manifest.live(subject_id) if a.kind == "crop"})
    return crops, "all crops in the subject's manifest (no job record found)"


LEAKAGE_PREFIXES = ("memorization.", "mia.", "bleed.")  # results.json metric keys that measure leakage


def _fmt(metric) -> str:
    if not isinstance(metric, dict):
        return "not measured"
    if not isinstance(metric.get("value"), (int, float)):
        return "not measured" + (f" ({metric['note']})" if metric.get("note") else "")
    ci = ""
    if isinstance(metric.get("ci_low"), (int, float)) and isinstance(metric.get("ci_high"), (int, float)):
        ci = f" [{metric['ci_low']:.4g}, {metric['ci_high']:.4g}]"
    return f"{metric['value']:.4g}{ci}"


def leakage_scores(run_dir: Path | None, label: str, seed: int | None = None) -> dict[str, dict] | str:
    """The label's leakage metrics from ``run_dir/results.json`` (schema: workbench/results.py),
    each beside the ``none`` control's: ``{metric: {"value", "control"}}``, or "not measured"."""
    path = Path(run_dir) / "results.json" if run_dir else None
    if path is None or not path.is_file():
        return NOT_MEASURED
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("rows")
    except (OSError, ValueError, AttributeError):
        return NOT_MEASURED

    def row(match) -> dict | None:
        found = [r for r in rows if isinstance(r, dict) and match(r) and r.get("status") == "ok"
                 and (seed is None or r.get("seed") == seed) and isinstance(r.get("metrics"), dict)]
        return found[0] if found else None

    if not isinstance(rows, list) or (mine := row(lambda r: r.get("label") == label)) is None:
        return NOT_MEASURED
    control = row(lambda r: r.get("recipe") == "none")
    scores = {key: {"value": _fmt(m), "control": _fmt(control["metrics"].get(key)) if control else "no control row"}
              for key, m in sorted(mine["metrics"].items()) if key.startswith(LEAKAGE_PREFIXES)}
    return scores or NOT_MEASURED


def _deadline(folder: Path, subject_id: str) -> str:
    from workbench.lifecycle.sealed import at_rest

    folder = at_rest(folder)  # the manifest names the store's paths
    times = [a.expires for a in manifest.live(subject_id) if manifest.resolve(a.path).is_relative_to(folder)]
    return _iso(max(times)) if times else "unknown (not in the subject's manifest)"


def model_card(meta: dict) -> str:
    if isinstance(meta["leakage"], dict):
        leak = ("| metric | this model [95% CI] | `none` control (the untouched base) [95% CI] |\n|---|---|---|\n"
                + "".join(f"| {k} | {v['value']} | {v['control']} |\n" for k, v in meta["leakage"].items()))
    else:
        leak = ("**Not measured.** No leakage scores were found for this model (run `workbench run` with "
                "metrics, then export from the run folder). Treat it as leaking until measured.\n")
    hashes = "\n".join(f"- `{h}`" for h in meta["train_image_sha256"]) or "- (none recorded)"
    return f"""# Model card: personalised `{meta['recipe']}` model for subject `{meta['subject_id']}`

**This file is personal data.** It was fine-tuned on photos of one real person, identified here only by
a pseudonymous id. Handle it like the photos themselves: do not publish or share it, keep it no longer
than the retention deadline below, and delete every copy when the person asks.

## What leaking this file would expose
- **The person's likeness.** With the base model, anyone can generate new, realistic images of this
  person in any setting, outfit or situation, with the prompt `{meta['instance_prompt']}`.
- **Possibly near-copies of the training photos.** Fine-tuned diffusion models can memorise and
  reproduce their training images (Carlini et al. 2023, "Extracting Training Data from Diffusion
  Models"); the memorisation scores below say how much this one does.
- **Membership of photos.** Whoever holds a photo can test whether it was in the training set
  (membership inference); the training-photo hashes below confirm it outright.
- It does **not** contain the original photos, file names or the person's name.

## Model
| field | value |
|---|---|
| recipe | `{meta['recipe']}` (label `{meta['label']}`) |
| backbone | `{meta['base']}` (sha256 of its files `{meta['base_sha256']}`) |
| training steps | {meta['steps']} |
| parameters | `{json.dumps(meta['params'], sort_keys=True)}` |
| weights hash (param_hash) | `{meta['param_hash']}` |
| exported | {meta['created']} |

## Training photos (sha256 of the aligned crops; source: {meta['train_source']})
{hashes}

## Leakage
{leak}
## Retention
Delete by **{meta['retention_deadline']}** (the subject's retention policy for model weights).
On an erasure request, `workbench erase {meta['subject_id']}` deletes this bundle where the workbench
wrote it; copies elsewhere (downloads, other machines, model hubs) must be deleted by whoever holds them.

## Loading
`workbench import BUNDLE.tar`, then `load_personalised("{meta['base']}", <restored folder>)`.
"""


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None,
         mtime: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else path.stat().st_size
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, mtime, 0, 0, "", ""
    if data is not None:
        tar.addfile(info, io.BytesIO(data))
    else:
        with open(path, "rb") as fh:
            tar.addfile(info, fh)


def export_bundle(model_dir: Path, out_tar: Path, run_dir: Path | None = None, label: str | None = None,
                  seed: int | None = None) -> Path:
    """Write ``model_dir``'s artifact (a run folder or its ``artifact/``) as a bundle at ``out_tar``.

    ``run_dir``: the experiment run folder whose ``results.json`` holds the leakage scores of ``label``
    (default: the recipe name) and ``seed`` (default: the artifact's own seed)."""
    from workbench.recipes.artifacts import artifact_dir, read_done

    folder = artifact_dir(model_dir).resolve()
    done = read_done(folder)
    subject_id = done["subject_id"]
    files = sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    if any(p.is_symlink() for p in files):
        raise UserError(f"{folder} holds symbolic links; a bundle carries regular files only")
    train, train_source = _training_hashes(folder, subject_id)
    label = label or done["recipe"]
    meta = {
        "format": BUNDLE_VERSION, "subject_id": subject_id, "recipe": done["recipe"], "label": label,
        "base": done["base"], "base_sha256": done["base_sha256"], "param_hash": done["param_hash"],
        "identifier": done["identifier"], "instance_prompt": done["instance_prompt"], "steps": done["steps"],
        "params": done["params"], "train_image_sha256": train, "train_source": train_source,
        "leakage": leakage_scores(run_dir, label, done.get("seed") if seed is None else seed),
        "retention_deadline": _deadline(folder, subject_id),
        "created": _iso(time.time()),
        "files": {f"{ARTIFACT}/{p.relative_to(folder).as_posix()}": {"sha256": manifest.sha256_file(p),
                                                                      "size": p.stat().st_size} for p in files},
    }
    out_tar = Path(out_tar).resolve()
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_tar.parent, prefix=".tmp-", suffix=".tar")
    mtime = int(done.get("created") or 0)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, CARD, model_card(meta).encode(), mtime=mtime)
            _add(tar, META, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode(), mtime=mtime)
            for p in files:
                _add(tar, f"{ARTIFACT}/{p.relative_to(folder).as_posix()}", path=p, mtime=mtime)
        os.replace(tmp, out_tar)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    art = manifest.register(subject_id, "bundle", out_tar)
    audit_log.append("export", subject_id, sha256=art.sha256)
    return out_tar


# ---------------------------------------------------------------------------------------------------
# Import


def _check_members(tar: tarfile.TarFile, max_bytes: int) -> dict[str, tarfile.TarInfo]:
    """The shared member checks (:func:`workbench.modelfile.archive.check_tar_members`), with the bundle's
    stricter names (:data:`_SAFE_PART`) and layout (``MODEL_CARD.md``, ``bundle.json``, ``artifact/``)."""
    members = check_tar_members(tar, "the bundle", "nothing was imported",
                                Limits(max_members=MAX_MEMBERS, max_bytes=max_bytes), part_ok=_SAFE_PART.match)
    for name, m in members.items():
        parts = PurePosixPath(name).parts
        if parts[0] not in (CARD, META, ARTIFACT) or (parts[0] != ARTIFACT and len(parts) > 1):
            raise UserError(f"unexpected entry {m.name!r}: a bundle holds {CARD}, {META} and {ARTIFACT}/ only")
    return members


def _copy_member(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path, expected: dict) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, got = hashlib.sha256(), 0
    src = tar.extractfile(m)
    with src, open(dest, "xb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            got += len(chunk)
            if got > m.size:
                raise UserError(f"bundle entry {m.name!r} is longer than its header says")
            h.update(chunk)
            out.write(chunk)
    if got != expected["size"] or h.hexdigest() != expected["sha256"]:
        raise UserError(f"bundle entry {m.name!r} does not match its hash in {META}: the file is damaged or "
                        "was modified")


def import_bundle(tar_path: Path, subject_id: str | None = None, max_bytes: int = MAX_BUNDLE_BYTES) -> Path:
    """Validate and restore a bundle; returns the model folder (pass it to ``load_personalised``; for an encrypted
    subject it holds ciphertext: load it from ``with sealed.opened(folder) as plain``)."""
    from workbench.lifecycle import sealed
    from workbench.lifecycle.erasure import working_on
    from workbench.recipes.artifacts import DONE, read_done

    tar_path = Path(tar_path)
    if not tar_path.is_file():
        raise UserError(f"{tar_path}: no such bundle file")
    if tar_path.stat().st_size > max_bytes + (1 << 20):
        raise UserError(f"{tar_path} is larger than {max_bytes >> 20} MiB; not importing it")
    try:
        tar = tarfile.open(tar_path, mode="r:")
    except tarfile.TarError as exc:
        raise UserError(f"{tar_path} is not an uncompressed tar bundle ({exc})") from None
    with tar:
        members = _check_members(tar, max_bytes)
        if META not in members or members[META].size > MAX_META_BYTES or f"{ARTIFACT}/{DONE}" not in members:
            raise UserError(f"{tar_path} is not a workbench bundle (no {META} or {ARTIFACT}/{DONE})")
        try:
            meta = json.loads(tar.extractfile(members[META]).read())
        except ValueError:
            raise UserError(f"{tar_path}: {META} is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_VERSION \
                or not isinstance(meta.get("files"), dict):
            raise UserError(f"{tar_path}: {META} has an unknown format (expected format {BUNDLE_VERSION})")
        if not all(isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
                   for v in meta["files"].values()):
            raise UserError(f"{tar_path}: {META} lists a file without sha256 and size")
        listed = set(meta["files"])
        present = {n for n, m in members.items() if m.isfile() and n.startswith(f"{ARTIFACT}/")}
        if listed != present:
            odd = sorted(listed ^ present)[:3]
            raise UserError(f"{tar_path}: the files in {ARTIFACT}/ do not match {META} ({', '.join(odd)})")
        try:
            subject_id = paths.check_subject_id(subject_id or meta.get("subject_id"))
        except ValueError as exc:
            raise UserError(f"{exc}; pass --subject ID") from None
        manifest.check_not_erasing(subject_id)
        digest = str(meta.get("param_hash", ""))
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UserError(f"{tar_path}: {META} has no valid param_hash")
        with working_on(subject_id, must_exist=False):  # an encrypted subject: sealed into its store at the end
            dest = sealed.pull(paths.subject_dir(subject_id) / "models" / f"imported-{digest[:16]}")
            if (dest / ARTIFACT / DONE).is_file() and read_done(dest)["param_hash"] == digest:
                return sealed.at_rest(dest)  # already imported
            _restore(tar, members, present, meta, dest, digest, tar_path)
            record = {"bundle_sha256": manifest.sha256_file(tar_path), "source_subject": meta.get("subject_id"),
                      "param_hash": digest, "imported": _iso(time.time())}
            manifest.write_bytes(subject_id, "record", dest / "imported.json", json.dumps(record, indent=1).encode())
            for f in sorted(p for p in (dest / ARTIFACT).rglob("*") if p.is_file()):
                manifest.register(subject_id, "record" if f.name == DONE else "weights", f)
    audit_log.append("import", subject_id, sha256=record["bundle_sha256"])
    return sealed.at_rest(dest)


def _restore(tar, members: dict, present: set[str], meta: dict, dest: Path, digest: str, tar_path: Path) -> None:
    """The bundle's ``artifact/`` into ``dest``, checked against its hashes and ``param_hash``, atomically."""
    from workbench.content import param_hash
    from workbench.recipes.artifacts import read_done

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".import-"))
    try:
        for name in sorted(present):
            _copy_member(tar, members[name], tmp / name[len(ARTIFACT) + 1:], meta["files"][name])
        done = read_done(tmp)
        if done.get("param_hash") != digest or param_hash(tmp) != digest:
            raise UserError(f"{tar_path}: the weights do not match the bundle's param_hash")
        shutil.rmtree(dest / ARTIFACT, ignore_errors=True)
        os.replace(tmp, dest / ARTIFACT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
