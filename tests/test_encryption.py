"""Encryption at rest with crypto-shredding (workbench/lifecycle/sealed.py, docs/LIFECYCLE.md).

A real run of a tiny spec (``none`` + a 2-step LoRA on a random tiny-face pipeline, LFW demo photos) with
``retention.encrypt: true`` and the same spec unencrypted, each on its own data root, once per module;
the working copies go to a scratch folder in tmp. Then: only ciphertext at rest, the same results, a rerun
that trains nothing, erasure that destroys the key so a backup stays unreadable. The sealing itself is
checked with processes that overlap on one subject and one that is killed while working.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from results_helpers import leaves

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import keys, manifest, policy, sealed, startup
from workbench.lifecycle.erasure import erase, working_on
from workbench.lifecycle.manifest import sha256_file
from workbench.lifecycle.verification import verify_erasure
from workbench.spec import parse_spec

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"
PERSON = "Naomi_Watts"
pytestmark = pytest.mark.skipif(not (LFW / "demo").is_dir(), reason=f"no LFW copy at {LFW}")


def _spec(base: Path, encrypt: bool | None) -> dict:
    return {
        "version": 1, "name": "sealed", "subject": {"demo": PERSON, "members": 5, "max_non_members": 5},
        "backbone": str(base), "device": "cpu",
        "recipes": [{"name": "none"}, {"name": "lora", "params": {"steps": 2}}],
        "prompts": {"with_identifier": ["a photo of {identifier} {class_noun}"],
                    "without_identifier": ["a photo of a {class_noun}"]},
        "images_per_prompt": 1, "sampling": {"steps": 2, "batch_size": 4},
        "tracking": {"wandb": "off"}, "metrics": {"encoders": ["sface"], "mia_attacks": ["loss"]},
        "retention": {"encrypt": encrypt},
    }


def _files(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _readable(path: Path) -> str | None:
    """What a plaintext file at rest would give away: an image, a PNG or JPEG, safetensors or a pickle."""
    data = path.read_bytes()
    if b"\x89PNG" in data or b"\xff\xd8\xff" in data or data[8:10] == b'{"' or data.startswith(b"PK\x03\x04"):
        return "image/weights magic bytes"
    try:
        with Image.open(path) as im:
            im.load()
        return "decodes as an image"
    except Exception:  # noqa: BLE001 - anything but an image is what we want
        return None


@pytest.fixture(scope="module")
def runs(random_base, tmp_path_factory, one_thread):
    """The spec run plain and encrypted, each on its own data root: {kind: (home, outcome)}."""
    from workbench.runner import run_experiment

    root = tmp_path_factory.mktemp("sealed")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_SCRATCH", str(root / "scratch"))
        for kind, encrypt in (("plain", None), ("encrypted", True)):
            mp.setenv("WORKBENCH_HOME", str(root / kind))
            out[kind] = root / kind, run_experiment(parse_spec(_spec(random_base, encrypt)))
            assert out[kind][1].ok, out[kind][1].status
    return out


@pytest.fixture
def env(runs, monkeypatch, tmp_path):
    """Point the process at one of the module's data roots, or at a copy of it (for a test that erases):
    env("encrypted", copy=True) -> (home, subject)."""
    def use(kind: str, copy: bool) -> tuple[Path, str]:
        home = runs[kind][0]
        if copy:
            home = shutil.copytree(home, tmp_path / kind)
        monkeypatch.setenv("WORKBENCH_HOME", str(home))
        monkeypatch.setenv("WORKBENCH_SCRATCH", str(tmp_path / "scratch"))
        return home, runs[kind][1].subject_id

    return use


def test_an_encrypted_subject_is_ciphertext_at_rest_and_gives_the_plain_runs_results(runs, monkeypatch):
    (plain, out_plain), (enc, out_enc) = runs["plain"], runs["encrypted"]
    sid = out_enc.subject_id
    assert out_plain.subject_id == sid  # a demo subject's id is a hash of the demo name
    store = enc / "subjects" / sid
    at_rest = [p for p in store.rglob("*") if p.is_file()]
    assert {p.relative_to(store).parts[0] for p in at_rest} >= {"photos", "crops", "models"}
    assert sorted(p.name for p in at_rest if not sealed.is_sealed(p)) == ["manifest.jsonl", "retention.json"]
    assert not {p.name: _readable(p) for p in at_rest if _readable(p)}
    blob = b"".join(p.read_bytes() for p in at_rest)  # no run of bytes of a photo, as sent or as stored plain
    originals = sorted((LFW / "demo" / PERSON).glob("*.jpg")) + sorted((plain / "subjects" / sid).rglob("*.png"))
    assert len(originals) > 20 and not [f.name for f in originals if f.read_bytes()[200:264] in blob]
    # the same check finds the plain subject's photos, crops and weights: it can fail
    assert sum(bool(_readable(p)) for p in (plain / "subjects" / sid).rglob("*") if p.is_file()) > 10
    assert not (plain / "keys").exists() and (enc / "keys" / f"{sid}.key").is_file()
    # decrypted, a photo is the plain run's (content-keyed: same name, same bytes)
    monkeypatch.setenv("WORKBENCH_HOME", str(enc))
    photo = next((store / "photos").iterdir())
    assert sealed.decrypt_bytes(sid, photo) == (plain / "subjects" / sid / "photos" / photo.name).read_bytes()
    # the manifest lists the store's files (with the plaintext's hash), never a working copy
    for art in manifest.live(sid):
        path = manifest.resolve(art.path)
        assert path.is_relative_to(enc) and path.is_file(), art
        if path.is_relative_to(store):
            assert hashlib.sha256(sealed.decrypt_bytes(sid, path)).hexdigest() == art.sha256 != sha256_file(path)
    # nothing is left in the scratch folder
    assert not [p for p in (enc.parent / "scratch").rglob("*") if p.is_file() and not p.name.endswith(".lock")]

    # the same results.json, metric by metric (absolute photo paths differ by the data root only)
    text = {k: next((h / "runs").glob("*/results.json")).read_text().replace(str(h), "H") for k, (h, _) in runs.items()}
    got, want = (dict(leaves(json.loads(text[k]))) for k in ("encrypted", "plain"))
    assert got.keys() == want.keys()
    assert not {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    # the report shows the nearest training photos as the plain run's does (decrypted while it is written)
    reports = {k: next((h / "runs").glob("*/report.html")).read_text() for k, (h, _) in runs.items()}
    assert reports["encrypted"].count("data:image/png") == reports["plain"].count("data:image/png") > 0


def test_a_rerun_of_an_encrypted_subject_reuses_its_model_and_trains_nothing(env, random_base):
    from workbench.runner import run_experiment

    home, sid = env("encrypted", copy=False)
    before = _files(home / "subjects" / sid) | _files(home / "runs")
    outcome = run_experiment(parse_spec(_spec(random_base, None)))  # encrypt left out: the subject stays encrypted
    assert outcome.ok and outcome.status["lora/seed0"]["train_steps"] == 2
    after = _files(home / "subjects" / sid) | _files(home / "runs")
    assert after.keys() == before.keys()
    changed = {p.relative_to(home) for p in before if after[p] != before[p]}
    # no photo, crop, model or generated image was written again (nor decrypted and sealed again)
    assert {p.name for p in changed if p.parts[0] == "subjects"} == {"manifest.jsonl", "retention.json"}, changed
    assert not [p for p in changed if "generations" in p.parts and p.suffix in (".png", ".json")], changed
    with pytest.raises(UserError, match="stays on until the subject is erased"):
        run_experiment(parse_spec(_spec(random_base, False)))


def test_erasure_destroys_the_key_so_a_backup_stays_unreadable(env, tmp_path):
    home, sid = env("encrypted", copy=True)
    backup = tmp_path / "backup"  # e.g. last night's copy of the shared store, which erasure cannot reach
    shutil.copytree(home / "subjects" / sid, backup)
    weights = next(backup.glob("models/lora-*/artifact/*.safetensors"))
    assert sealed.decrypt_bytes(sid, weights)[8:10] == b'{"'  # readable while the key exists
    receipt = erase(sid)
    assert receipt.key_destroyed and receipt.verification == {"ok": True, "residual": 0}
    assert verify_erasure(sid)["ok"] and not keys.key_path(sid).exists()
    assert json.loads(next((home / "receipts").glob("*.json")).read_text())["key_destroyed"] is True
    sealed_files = [p for p in backup.rglob("*") if p.is_file() and sealed.is_sealed(p)]
    assert len(sealed_files) > 10
    for f in sealed_files:
        with pytest.raises(keys.KeyUnavailable):
            sealed.decrypt_bytes(sid, f)


def test_commands_open_an_encrypted_model_or_refuse_the_subject(env, tmp_path, capsys):
    import tarfile

    from workbench.cli import main
    from workbench.lifecycle.bundle import import_bundle

    home, sid = env("encrypted", copy=False)  # run.json names the models by their absolute path
    run_dir = next((home / "runs").iterdir())
    assert main(["export", str(run_dir), "lora", "--out", str(tmp_path / "lora.tar")]) == 0
    with tarfile.open(tmp_path / "lora.tar") as tar:  # the bundle leaves the workbench: plaintext
        assert json.load(tar.extractfile("artifact/DONE.json"))["subject_id"] == sid
    policy.set_retention("s-imported", {"encrypt": True})
    model = import_bundle(tmp_path / "lora.tar", "s-imported")
    assert model.is_relative_to(paths.stored_subject_dir("s-imported"))
    assert all(sealed.is_sealed(f) for f in model.rglob("*") if f.is_file())
    assert main(["generate", "--recipe-dir", str(model / "artifact"), "--prompt", "a photo of {identifier}",
                 "--n", "1", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "gen")]) == 0
    with Image.open(next((tmp_path / "gen").glob("*.png"))) as im:
        assert im.size == (64, 64)
    capsys.readouterr()
    assert main(["train", "--subject", sid, "--recipe", "lora", "--out", str(tmp_path / "t")]) == 2  # refused
    assert "encrypted at rest and this command cannot open it" in capsys.readouterr().err


def test_an_unencrypted_subject_is_stored_and_erased_as_before(env):
    home, sid = env("plain", copy=True)
    assert not policy.load_policy(sid)["encrypt"]
    with working_on(sid):
        assert paths.subject_dir(sid) == paths.stored_subject_dir(sid)  # no working copy
    assert not (home.parent / "scratch").exists()
    with Image.open(next((home / "subjects" / sid / "crops").iterdir())) as im:
        assert im.size == (64, 64)
    receipt = erase(sid)
    assert not receipt.key_destroyed and receipt.verification["ok"]


# --- the sealing itself -------------------------------------------------------------------------------

def test_chunks_are_checked_in_order_and_to_the_end(home, tmp_path, monkeypatch):
    monkeypatch.setattr(sealed, "CHUNK", 10)
    src, dst = tmp_path / "plain.bin", tmp_path / "sealed.bin"
    src.write_bytes(bytes(range(35)))
    sealed.encrypt_file("s-chunks", src, dst)
    lines = dst.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4 and sealed.decrypt_bytes("s-chunks", dst) == src.read_bytes()
    for bad in (lines[:-1], lines[1:], [lines[1], lines[0]] + lines[2:], lines + lines[-1:]):
        dst.write_bytes(b"".join(bad))
        with pytest.raises(UserError, match="was modified"):
            sealed.decrypt_bytes("s-chunks", dst)
    src.write_bytes(b"")
    sealed.encrypt_file("s-chunks", src, dst)
    assert sealed.decrypt_bytes("s-chunks", dst) == b""


def test_turning_encryption_on_seals_what_was_stored_and_it_cannot_be_turned_off(home, tmp_path, monkeypatch):
    from workbench.subjects.store import SubjectStore

    monkeypatch.setenv("WORKBENCH_SCRATCH", str(tmp_path / "scratch"))
    sid = "s-later"
    with working_on(sid, must_exist=False):
        manifest.write_bytes(sid, "crop", paths.subject_dir(sid) / "crops" / "a.png", b"\x89PNG plain")
    stored = paths.stored_subject_dir(sid) / "crops" / "a.png"
    assert stored.read_bytes() == b"\x89PNG plain"
    policy.set_retention(sid, {"encrypt": True})
    with working_on(sid):
        work = paths.subject_dir(sid)
        assert work != stored.parent.parent and (work / "crops" / "a.png").read_bytes() == b"\x89PNG plain"
        assert sealed.is_sealed(stored)  # encrypted in place when the subject was opened
        (work / "crops" / "a.png").unlink()  # deleted here: deleted from the store at the close
        (work / "notes.txt").write_bytes(b"new")  # not registered: sealed at the close
    assert not stored.exists() and not work.exists()
    assert sealed.decrypt_bytes(sid, paths.stored_subject_dir(sid) / "notes.txt") == b"new"
    with pytest.raises(ValueError, match="stays on until the subject is erased"):
        policy.set_retention(sid, {"encrypt": False})
    with pytest.raises(UserError, match="encrypted at rest and this command cannot open it"):
        SubjectStore(sid)  # outside working_on: refused, never read as ciphertext nor written as plaintext


WORKER = """
import sys, time
from pathlib import Path
from workbench import paths
from workbench.lifecycle import manifest
from workbench.lifecycle.erasure import working_on

name, other, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with working_on("s-shared"):
    work = paths.subject_dir("s-shared")
    (sync / name).touch()
    while not (sync / other).exists():  # both processes have the subject open from here on
        time.sleep(0.05)
    (work / "models" / name).mkdir(parents=True)
    (work / "models" / name / "loss.jsonl").write_text("step 1")  # not registered: sealed with its model's file
    manifest.write_bytes("s-shared", "weights", work / "models" / name / "w.bin", name.encode() * 100)
    if name == "a":
        (work / "shared.txt").write_text("changed by a")
    while name == "b" and not (sync / "a-closed").exists():  # b closes after a: it must not undo a's change
        time.sleep(0.05)
    print(work, flush=True)
    if name == "killed":
        time.sleep(600)
(sync / f"{name}-closed").touch()
"""


def _worker(tmp_path: Path, name: str, other: str) -> subprocess.Popen:
    (tmp_path / "sync").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", WORKER, name, other, str(tmp_path / "sync")],
                            stdout=subprocess.PIPE, text=True)


@pytest.fixture
def shared(home, tmp_path, monkeypatch) -> Path:
    """An encrypted subject "s-shared" holding shared.txt; returns the scratch folder."""
    monkeypatch.setenv("WORKBENCH_SCRATCH", str(tmp_path / "scratch"))
    policy.set_retention("s-shared", {"encrypt": True})
    with working_on("s-shared"):
        (paths.subject_dir("s-shared") / "shared.txt").write_text("first")
    return tmp_path / "scratch"


def test_processes_working_on_one_encrypted_subject_at_once_merge(shared, tmp_path):
    workers = [_worker(tmp_path, "a", "b"), _worker(tmp_path, "b", "a")]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    store = paths.stored_subject_dir("s-shared")
    for name in ("a", "b"):  # each process's new file, and a's change that b (which left it alone) kept
        assert sealed.decrypt_bytes("s-shared", store / "models" / name / "w.bin") == name.encode() * 100
    assert sealed.decrypt_bytes("s-shared", store / "shared.txt") == b"changed by a"
    pids = {str(w.pid) for w in workers}  # each removed its working copy, and its scratch folder at exit
    assert not list(shared.rglob("*.bin")) and not [p for p in shared.rglob("*") if p.name.split("-")[0] in pids]


def test_erasure_waits_for_work_on_an_encrypted_subject_then_leaves_no_plaintext_and_no_key(shared):
    import threading

    from workbench.lifecycle.erasure import erasure_requested

    opened = threading.Event()

    def work():  # a row: it stops when the erasure asks, and its block seals and removes the working copy
        with working_on("s-shared"):
            manifest.write_bytes("s-shared", "crop", paths.subject_dir("s-shared") / "crops" / "c.png", b"face")
            opened.set()
            deadline = time.time() + 60
            while not erasure_requested("s-shared") and time.time() < deadline:
                time.sleep(0.05)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert opened.wait(30) and list(shared.rglob("c.png"))  # plaintext in the working copy while it works
    receipt = erase("s-shared")
    thread.join(30)
    assert receipt.key_destroyed and receipt.verification["ok"] and verify_erasure("s-shared")["ok"]
    assert not paths.stored_subject_dir("s-shared").exists() and not list(shared.rglob("c.png"))


def test_a_killed_process_leaves_its_registered_files_sealed_and_its_working_copy_is_swept(shared, tmp_path):
    worker = _worker(tmp_path, "killed", "killed")
    try:
        work = Path(worker.stdout.readline().strip())
        assert (work / "models" / "killed" / "w.bin").read_bytes() == b"killed" * 100  # plaintext, in scratch only
        stored = paths.stored_subject_dir("s-shared") / "models" / "killed"
        assert sealed.decrypt_bytes("s-shared", stored / "w.bin") == b"killed" * 100  # sealed when registered
        assert sealed.decrypt_bytes("s-shared", stored / "loss.jsonl") == b"step 1"  # ... with its model folder
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert work.exists()
    startup()  # every command's start: working copies of dead processes are removed
    assert not work.exists() and not list(shared.rglob("*.bin"))
