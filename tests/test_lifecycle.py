"""Data lifecycle on a real small subject: retention, erasure in every store, verification, the audit
log, encryption at rest and the model bundle (PRIVACY.md, "Lifecycle").

The subject: 5 LFW fixture photos taken in at 64 px, a 2-step LoRA on a random tiny-face pipeline, one
generation in a run folder, a W&B-offline-style run folder and an app-temp copy of an upload
(registered with ``register_external``). Three stores live side by side in ``tmp``: the data root
(``WORKBENCH_HOME``), ``WANDB_DIR`` and ``GRADIO_TEMP_DIR``. The world is built once per module and
restored from a pristine copy before each test that changes it. Photos are read from the shared LFW
copy, never copied into the repository.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import tarfile  # noqa: E402
from contextlib import redirect_stdout  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from workbench import paths  # noqa: E402
from workbench.errors import UserError  # noqa: E402
from workbench.lifecycle import audit_log, commands, keys, manifest, policy, stores  # noqa: E402
from workbench.lifecycle.bundle import import_bundle  # noqa: E402
from workbench.lifecycle.erasure import erase  # noqa: E402
from workbench.lifecycle.retention import purge  # noqa: E402
from workbench.lifecycle.verification import EMPTY_SHA256, verify_erasure  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"
FIXTURE = LFW / "fixture"
PERSON = "Colin_Powell"
SUBJECT = "subject-lc"
PROMPT = "a photo of sks person"

pytestmark = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"no LFW copy at {LFW}")


def cli(*argv: str) -> tuple[int, str]:
    """Run one of this module's sub-commands in-process, as `workbench ...` would."""
    parser = argparse.ArgumentParser(prog="workbench")
    commands.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = args.func(args)
    return rc, buf.getvalue()


def all_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def sample(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="np").images


@dataclass
class World:
    root: Path
    home: Path
    wandb: Path
    gradio: Path
    base: str  # the random tiny-face pipeline (outside every store)
    model: Path  # the LoRA run folder (subject_dir/models/lora-test)
    run_dir: Path
    wandb_run: Path
    app_copy: Path
    accepted: list[str]  # sha256 of the accepted uploads

    def env(self, mp) -> None:
        mp.setenv("WORKBENCH_HOME", str(self.home))
        mp.setenv("WANDB_DIR", str(self.wandb))
        mp.setenv("GRADIO_TEMP_DIR", str(self.gradio))


def _build(root: Path, base: str) -> World:
    from workbench.generate import generate
    from workbench.recipes import engine, registry
    from workbench.recipes.artifacts import load_personalised
    from workbench.subjects.intake import intake, load_subject

    report = intake(sorted((FIXTURE / PERSON).glob("*.jpg")), SUBJECT, resolution=64)
    assert len(report.accepted) >= 4, report.to_json()
    subject = load_subject(SUBJECT)
    model = paths.subject_dir(SUBJECT) / "models" / "lora-test"
    recipe = registry.get_recipe("lora")
    job = engine.TrainJob(base=base, train_images=subject.train, subject_id=SUBJECT, out_dir=model, device="cpu",
                          checkpoint_every=0)
    result = recipe.train(job, recipe.params(steps=2, batch_size=2))
    run_dir = paths.runs_root() / f"exp-{SUBJECT}-0123456789"
    pipe = load_personalised(base, result.artifact_dir, "cpu")
    pipe.set_progress_bar_config(disable=True)
    out = run_dir / "generations" / "lora" / "seed0"
    records = generate(pipe, [(PROMPT, "identifier", 0)], [0], 1, 2, 5.0, 1, out, SUBJECT, "lora")
    status = {"lora/seed0": {"ok": True, "recipe": "lora", "seed": 0, "model": str(result.artifact_dir)}}
    manifest.write_bytes(SUBJECT, "record", run_dir / "run.json",
                         json.dumps({"name": "exp", "subject_id": SUBJECT, "status": status}).encode())
    # a W&B offline run mirroring a generated image, and the app's temp copy of an upload
    wandb_run = root / "wandb" / "wandb" / "offline-run-20300101_000000-abc123"
    (wandb_run / "files" / "media").mkdir(parents=True)
    shutil.copyfile(out / records[0].file, wandb_run / "files" / "media" / "sample_0.png")
    (wandb_run / "run-abc123.wandb").write_bytes(b"W&B offline log " + os.urandom(64))
    manifest.register_external(SUBJECT, "wandb", wandb_run)
    upload = paths.subject_dir(SUBJECT) / "photos" / f"{report.accepted[0].sha256}.png"
    app_copy = root / "gradio" / "5f1c0ffee" / "upload.png"
    app_copy.parent.mkdir(parents=True)
    shutil.copyfile(upload, app_copy)
    manifest.register_external(SUBJECT, "app_temp", app_copy)
    return World(root, root / "home", root / "wandb", root / "gradio", base, model, run_dir, wandb_run, app_copy,
                 [a.sha256 for a in report.accepted])


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from workbench.backbones.tiny_face import build_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("tiny-face")
    build_pipeline(base, seed=0)
    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as mp:
        for name, sub in (("WORKBENCH_HOME", "home"), ("WANDB_DIR", "wandb"), ("GRADIO_TEMP_DIR", "gradio")):
            mp.setenv(name, str(root / sub))
        world = _build(root, str(base))
    pristine = tmp_path_factory.mktemp("pristine") / "world"
    shutil.copytree(root, pristine, symlinks=True)
    yield world, pristine
    torch.set_num_threads(threads)


@pytest.fixture
def world(template, monkeypatch) -> World:
    """The module's world, restored to how it was built."""
    world, pristine = template
    shutil.rmtree(world.root)
    shutil.copytree(pristine, world.root, symlinks=True)
    world.env(monkeypatch)
    return world


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A bare data root with the W&B and app-temp stores beside it."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    return tmp_path / "home"


# --- erasure and verification -----------------------------------------------------------------------

def test_erase_removes_every_derived_file_in_every_store(world, tmp_path):
    before = verify_erasure(SUBJECT)
    assert not before["ok"] and any("folder still exists" in r["reason"] for r in before["residual"])
    # unregistered copies of a photo and of a crop, and a cache file named after a crop's hash
    upload = world.home / "subjects" / SUBJECT / "photos" / f"{world.accepted[1]}.png"
    crop = next((world.home / "subjects" / SUBJECT / "crops").glob("*.png"))
    strays = [world.home / "stray" / "copy of my selfie.png", world.wandb / "misc" / "x.bin",
              world.gradio / "other" / "y.png", world.home / "cache" / "embeddings" / "sface" / f"{crop.stem}.npy"]
    for dst, src in zip(strays, [upload, crop, upload, None], strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes() if src else b"\x93NUMPY embedding")
    unrelated = [world.home / "notes.txt", world.home / "empty", world.wandb / "settings", world.gradio / "z.txt"]
    for i, f in enumerate(unrelated):
        f.write_bytes(b"" if f.name == "empty" else f"not the subject's {i}".encode())
    keys.ensure_key(SUBJECT)

    rc, out = cli("erase", SUBJECT, "--json")
    receipt = json.loads(out)
    assert rc == 0 and receipt["verification"] == {"ok": True, "residual": 0}
    assert verify_erasure(SUBJECT)["ok"]
    assert cli("verify-erasure", SUBJECT, "--json")[0] == 0
    personal = {a["sha256"] for a in receipt["artifacts"]}
    assert set(world.accepted) <= personal and EMPTY_SHA256 not in personal
    left = all_files(world.home, world.wandb, world.gradio)
    assert not {manifest.sha256_file(p) for p in left} & personal
    assert not any(p.exists() for p in strays) and all(p.exists() for p in unrelated)
    for gone in (world.home / "subjects" / SUBJECT, world.model, world.run_dir, world.wandb_run, world.app_copy,
                 keys.key_path(SUBJECT)):
        assert not gone.exists(), gone
    counts = receipt["counts"]
    assert counts["upload"] == len(world.accepted) and counts["copy"] == len(strays)
    assert {"crop", "weights", "generation", "record", "wandb", "app_temp"} <= set(counts)
    assert receipt["key_destroyed"] and not receipt["resumed"]
    # the receipt on disk: hashes and counts, no names, no file names, no paths
    text = (world.home / "receipts" / f"{receipt['receipt_id']}.json").read_text()
    assert json.loads(text) == receipt
    for secret in (PERSON, "Colin", "Powell", ".jpg", ".png", "selfie", str(world.root), "lora-test"):
        assert secret not in text, secret
    ok, line, reason = audit_log.verify()
    assert ok, (line, reason)
    assert [e["action"] for e in audit_log.read()][-2:] == ["verify", "verify"]
    assert "erase" in [e["action"] for e in audit_log.read()]


def test_erase_keeps_files_another_subject_also_holds(home):
    shared = b"class image made by the base model for everyone"
    for sid in ("subject-a", "subject-b"):
        manifest.write_bytes(sid, "class_image", paths.subject_dir(sid) / "class_images" / "c-0000.png", shared)
    manifest.write_bytes("subject-a", "crop", paths.subject_dir("subject-a") / "crops" / "a.png", b"a's face")
    out = home / "generations" / "img-00.png"  # one --out folder used for both: b's image replaced a's
    manifest.write_bytes("subject-a", "generation", out, b"a's generation")
    manifest.write_bytes("subject-b", "generation", out, b"b's generation")
    receipt = erase("subject-a")
    assert receipt.verification["ok"]
    assert (paths.subject_dir("subject-b") / "class_images" / "c-0000.png").read_bytes() == shared
    assert out.read_bytes() == b"b's generation"
    assert not paths.subject_dir("subject-a").exists()
    with pytest.raises(UserError, match="no data"):
        erase("subject-never-seen")


def test_erase_outside_the_stores_deletes_registered_files_only(home, tmp_path):
    project = tmp_path / "projects" / "my-run"  # e.g. `workbench train --out ~/projects/my-run`
    manifest.write_bytes(SUBJECT, "record", project / "job.json", json.dumps({"subject_id": SUBJECT}).encode())
    manifest.write_bytes(SUBJECT, "weights", project / "artifact" / "w.safetensors", b"lora weights")
    (project / "notes.txt").write_text("the user's own notes")
    receipt = erase(SUBJECT)
    assert receipt.verification["ok"]
    assert receipt.counts == {"record": 1, "weights": 1, "unregistered": 1}  # + the manifest itself
    assert sorted(p.name for p in tmp_path.joinpath("projects").rglob("*")) == ["my-run", "notes.txt"]


def test_register_external_only_inside_stores_and_nothing_registers_while_erasing(home, tmp_path):
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="not inside a store"):
        manifest.register_external(SUBJECT, "wandb", outside)
    with pytest.raises(ValueError, match="not inside a store"):
        manifest.register_external(SUBJECT, "wandb", stores.stores()["wandb"].parent)
    assert stores.stores()["data"] == home.resolve()
    journal = home / "erasure-journal" / f"{SUBJECT}.json"
    journal.parent.mkdir(parents=True)
    journal.write_text("{}")
    with pytest.raises(UserError, match="being erased"):
        manifest.write_bytes(SUBJECT, "crop", paths.subject_dir(SUBJECT) / "c.png", b"c")


def test_default_stores_live_in_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    s = stores.stores()
    assert s["wandb"] == (tmp_path / "h" / "wandb").resolve()
    assert s["app_temp"] == (tmp_path / "h" / "gradio-tmp").resolve()
    nested = s["wandb"] / "run" / "f.bin"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"1")
    assert [name for name, p in stores.walk_files() if p == nested] == ["wandb"]  # listed once


# --- retention --------------------------------------------------------------------------------------

def test_purge_deletes_exactly_the_expired_kinds(world):
    policy.set_retention(SUBJECT, {"default_days": 30, "kinds": {"upload": 7, "app_temp": 1}})
    live = manifest.live(SUBJECT)
    created = max(a.created for a in live)
    kinds_before = {a.kind for a in live}
    day8 = datetime.fromtimestamp(created, timezone.utc) + timedelta(days=8)

    report = purge(day8)
    assert report.counts == {SUBJECT: {"upload": len(world.accepted), "app_temp": 1}}
    assert not list((world.home / "subjects" / SUBJECT / "photos").glob("*"))
    assert not world.app_copy.exists()
    assert {a.kind for a in manifest.live(SUBJECT)} == kinds_before - {"upload", "app_temp"}
    crops = list((world.home / "subjects" / SUBJECT / "crops").glob("*.png"))
    assert len(crops) == len(world.accepted)
    assert {t["sha256"] for t in manifest.tombstones(SUBJECT)} >= set(world.accepted)
    assert purge(day8).files == 0  # nothing more is due

    day31 = (day8 + timedelta(days=23)).isoformat()
    rc, out = cli("purge", "--now", day31, "--dry-run", "--json")
    dry = json.loads(out)
    assert rc == 0 and dry["dry_run"] and {"crop", "weights", "generation", "wandb"} <= set(dry["counts"][SUBJECT])
    assert len(crops) == len(list((world.home / "subjects" / SUBJECT / "crops").glob("*.png")))
    rc, out = cli("purge", "--now", day31, "--json")
    assert rc == 0 and json.loads(out)["files"] == dry["files"]
    assert manifest.live(SUBJECT) == []
    left = sorted(p.name for p in all_files(world.home / "subjects", world.home / "runs", world.wandb, world.gradio))
    assert left == ["manifest.jsonl", "retention.json"]
    assert audit_log.verify()[0] and [e["action"] for e in audit_log.read()][-1] == "purge"


def test_purge_invalidates_a_model_whose_weights_expired(world):
    policy.set_retention(SUBJECT, {"default_days": 30, "kinds": {"weights": 2}})
    created = max(a.created for a in manifest.live(SUBJECT))
    purge(datetime.fromtimestamp(created, timezone.utc) + timedelta(days=3))
    artifact = world.model / "artifact"
    assert not (artifact / "DONE.json").exists(), "a model without weights must not look finished"
    assert not list(artifact.glob("*.safetensors")) and (world.model / "job.json").exists()
    assert list((world.home / "subjects" / SUBJECT / "crops").glob("*.png"))


def test_verification_finds_copies_of_purged_files(world):
    photo = (world.home / "subjects" / SUBJECT / "photos" / f"{world.accepted[0]}.png").read_bytes()
    policy.set_retention(SUBJECT, {"default_days": 30, "kinds": {"upload": 0}})
    purge()
    assert not (world.home / "subjects" / SUBJECT / "photos" / f"{world.accepted[0]}.png").exists()
    (world.gradio / "later-copy.png").write_bytes(photo)
    residual = verify_erasure(SUBJECT)["residual"]
    assert {"store": "app_temp", "path": "later-copy.png", "reason": "content matches a upload of the subject"} \
        in residual


def test_retention_policy_is_checked():
    with pytest.raises(ValueError, match="unknown artifact kind 'uploads'"):
        policy.normalise({"kinds": {"uploads": 7}})
    with pytest.raises(ValueError, match="default_days"):
        policy.normalise({"default_days": -1})
    with pytest.raises(ValueError, match="unknown key"):
        policy.normalise({"days": 3})
    from workbench.spec import RetentionSpec

    assert policy.normalise(RetentionSpec(kinds={"upload": 7})) == {"default_days": 30, "kinds": {"upload": 7},
                                                                    "encrypt": False}


def test_every_manifest_line_has_a_deadline_from_the_policy(home):
    policy.set_retention(SUBJECT, {"default_days": 10, "kinds": {"crop": 2}})
    a = manifest.write_bytes(SUBJECT, "crop", paths.subject_dir(SUBJECT) / "crops" / "c.png", b"crop")
    b = manifest.write_bytes(SUBJECT, "weights", paths.subject_dir(SUBJECT) / "w.bin", b"weights")
    assert a.expires == pytest.approx(a.created + 2 * 86400) and b.expires == pytest.approx(b.created + 10 * 86400)
    assert [e["action"] for e in audit_log.read()] == ["register", "register"]
    assert audit_log.read()[0]["sha256"] == a.sha256


# --- audit log --------------------------------------------------------------------------------------

def _tampered(lines: list[str], how: str) -> list[str]:
    lines = list(lines)
    if how == "edit":
        entry = json.loads(lines[2])
        entry["count"] = 999
        lines[2] = json.dumps(entry, sort_keys=True)
    elif how == "delete":
        del lines[2]
    elif how == "reorder":
        lines[2], lines[3] = lines[3], lines[2]
    elif how == "insert":  # a forger who knows the format: correct own hash, prev_hash and seq
        prev = json.loads(lines[1])
        forged = {"seq": 3, "time": prev["time"], "actor": "mallory", "action": "erase", "subject": "s",
                  "prev_hash": prev["hash"]}
        forged["hash"] = audit_log.line_hash(forged)
        lines.insert(2, json.dumps(forged, sort_keys=True))
    elif how == "truncate":
        lines = lines[:-1]
    return lines


@pytest.mark.parametrize("how, bad_line", [("edit", 3), ("delete", 3), ("reorder", 3), ("insert", 4),
                                           ("truncate", 6)])
def test_tampered_audit_log_fails_verification(home, how, bad_line):
    for i in range(6):
        audit_log.append("register", f"subject-{i % 2}", sha256=f"{i:064x}", count=1, kind="crop")
    assert audit_log.verify() == (True, None, "6 lines, chain intact")
    original = audit_log.log_path().read_text().splitlines()
    audit_log.log_path().write_text("\n".join(_tampered(original, how)) + "\n")
    ok, line, reason = audit_log.verify()
    assert not ok and line == bad_line, reason
    rc, out = cli("audit-log", "verify", "--json")
    assert rc == 1 and json.loads(out)["first_bad_line"] == bad_line


def test_audit_log_survives_a_line_cut_short(home):
    audit_log.append("purge", "s", count=2)
    with open(audit_log.log_path(), "ab") as fh:
        fh.write(b'{"seq": 2, "act')  # a crash in the middle of an append
    entry = audit_log.append("erase", "s", count=1)
    assert [e["action"] for e in audit_log.read()] == ["purge", "repair", "erase"] and entry["seq"] == 3
    assert audit_log.verify()[0]


# --- encryption at rest -----------------------------------------------------------------------------

def test_destroying_the_key_makes_leftover_ciphertext_unreadable(home, tmp_path):
    photo = tmp_path / "photo.jpg"  # a working copy in tmp, never in the repository
    shutil.copyfile(FIXTURE / PERSON / f"{PERSON}_0001.jpg", photo)
    policy.set_retention(SUBJECT, {"encrypt": True})
    assert keys.encryption_enabled(SUBJECT)
    backup = keys.encrypt_file(SUBJECT, photo, home / "backup" / "photo.enc", kind="upload")
    assert stat.S_IMODE(keys.key_path(SUBJECT).stat().st_mode) == 0o600
    assert backup.read_bytes() != photo.read_bytes()
    assert keys.decrypt_bytes(SUBJECT, backup.read_bytes()) == photo.read_bytes()
    leftover = tmp_path / "backup-disk.enc"  # e.g. a backup the erasure cannot reach
    shutil.copyfile(backup, leftover)
    erase(SUBJECT)
    assert not keys.key_path(SUBJECT).exists() and not backup.exists()
    with pytest.raises(keys.KeyUnavailable):
        keys.decrypt_bytes(SUBJECT, leftover.read_bytes())
    keys.ensure_key(SUBJECT)  # a new key for the same id opens nothing old
    with pytest.raises(UserError, match="not subject"):
        keys.decrypt_bytes(SUBJECT, leftover.read_bytes())


# --- the model file ---------------------------------------------------------------------------------

def test_exported_lora_bundle_imports_and_generates(world, tmp_path):
    from workbench.recipes.artifacts import load_personalised

    out = tmp_path / "model.tar"
    rc, printed = cli("export", str(world.run_dir), "lora", "--out", str(out))
    assert rc == 0 and Path(printed.strip()) == out
    with tarfile.open(out) as tar:
        names = tar.getnames()
        card = tar.extractfile("MODEL_CARD.md").read().decode()
        meta = json.loads(tar.extractfile("bundle.json").read())
    assert names[:2] == ["MODEL_CARD.md", "bundle.json"] and "artifact/DONE.json" in names
    assert "artifact/pytorch_lora_weights.safetensors" in names
    job = json.loads((world.model / "job.json").read_text())
    assert meta["train_image_sha256"] == sorted(job["train_images"]) and meta["leakage"] == "not measured"
    for phrase in ("Not measured", "likeness", "near-copies of the training photos", "Membership", "Delete by"):
        assert phrase in card, phrase
    assert PERSON not in card and "Colin" not in card
    assert [a.kind for a in manifest.live(SUBJECT) if manifest.resolve(a.path) == out] == ["bundle"]

    metric = {"value": 0.31, "ci_low": 0.2, "ci_high": 0.4, "n": 4}
    rows = [{"label": "none", "recipe": "none", "seed": 0, "status": "ok",
             "metrics": {"memorization.min_l2": metric | {"value": 0.5}, "identity.ism_train": metric}},
            {"label": "lora", "recipe": "lora", "seed": 0, "status": "ok",
             "metrics": {"memorization.min_l2": metric, "mia.loss.auc": {"value": None, "ci_low": None,
                                                                          "ci_high": None, "n": 0, "note": "no MIA"},
                         "identity.ism_train": metric}}]
    (world.run_dir / "results.json").write_text(json.dumps({"schema": 1, "rows": rows}))
    cli("export", str(world.run_dir), "lora", "--out", str(out))
    with tarfile.open(out) as tar:
        card = tar.extractfile("MODEL_CARD.md").read().decode()
    assert "| memorization.min_l2 | 0.31 [0.2, 0.4] | 0.5 [0.2, 0.4] |" in card
    assert "| mia.loss.auc | not measured (no MIA) | not measured |" in card and "identity." not in card

    rc, printed = cli("import", str(out), "--subject", "subject-imported")
    restored = Path(printed.strip())
    assert restored.is_relative_to(paths.subject_dir("subject-imported"))
    assert import_bundle(out, "subject-imported") == restored  # idempotent
    registered = {manifest.resolve(a.path) for a in manifest.live("subject-imported")}
    assert {p for p in restored.rglob("*") if p.is_file()} <= registered
    got = sample(load_personalised(world.base, restored, "cpu"))
    want = sample(load_personalised(world.base, world.model, "cpu"))
    assert got.shape == (1, 64, 64, 3) and np.array_equal(got, want)

    # erasing the person also erases the exported bundle and the imported copy
    assert erase(SUBJECT).verification["ok"]
    assert not out.exists() and not restored.exists()


def _tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("entries, message", [
    ([_file("../evil.txt")], "unsafe entry"),
    ([_file("/tmp/evil.txt")], "unsafe entry"),
    ([_file("artifact/../../evil.txt")], "unsafe entry"),
    ([_link("artifact/w.safetensors", "/etc/passwd")], "link or special file"),
    ([_link("artifact/w.safetensors", "bundle.json", tarfile.LNKTYPE)], "link or special file"),
    ([_file("bundle.json"), _file("bundle.json")], "twice"),
    ([_file("notes/extra.txt")], "unexpected entry"),
    ([_file("artifact/w.bin", b"0" * 5000)], "more than"),
    ([_file("MODEL_CARD.md")], "not a workbench bundle"),
    ([_file("bundle.json", json.dumps({"format": 1, "subject_id": "s", "param_hash": "0" * 64,
                                       "files": {"artifact/DONE.json": {"sha256": "0" * 64, "size": 2}}}).encode()),
      _file("artifact/DONE.json", b"{}")], "does not match its hash"),
])
def test_import_rejects_unsafe_bundles(home, tmp_path, entries, message):
    bundle = _tar(tmp_path / "bad.tar", entries)
    with pytest.raises(UserError, match=message):
        import_bundle(bundle, max_bytes=4096)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert not (home / "subjects").exists() or not list((home / "subjects").rglob("*.safetensors"))
