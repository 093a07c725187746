"""Known answers for ``workbench audit`` in a vendor's framing (issue #12, item 7; METRICS.md, "Known answers").

A vendor's headshot that *is* a training photo comes whole-frame, re-encoded and rescaled, not as the
workbench's aligned crop. The audit detects and aligns the generated images' faces like the reference
photos', so such copies are extracted, other photos of the same person are not, and an image without a
face is counted in FDFR and skipped by memorisation with its reason.

One real LFW person outside the demo list (``people/<Name>/``, read at test time from
``../shared/data/lfw``, never copied into the repository): a seeded random split of their photos into
train, holdout and "other" photos; the generated folders are built under pytest's ``tmp_path``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from metrics_helpers import LFW, noise_images
from PIL import Image

from workbench.metrics.audit import ALIGNED_BY_AUDIT, AS_GIVEN, audit
from workbench.subjects.decode import load_photo

ROOT = Path(__file__).resolve().parent.parent
PERSON = "Jack_Straw"  # 28 photos; not a demo person (checked below)
PEOPLE = LFW / "people"
N_TRAIN, N_HOLDOUT, N_OTHER = 12, 5, 10
SEED = 12
JPEG_QUALITY = 70
SCALE = (0.85, 1.0)  # whole-frame rescale factor, drawn per photo
RESAMPLES = 200

pytestmark = pytest.mark.skipif(not (PEOPLE / PERSON).is_dir(), reason=f"no LFW people photos at {PEOPLE}")


def _demo_people() -> set[str]:
    with open(LFW / "demo" / "manifest.csv", newline="", encoding="utf-8") as f:
        return {row["identity"] for row in csv.DictReader(f)}


def _vendor_copy(path: Path, rng: np.random.Generator) -> bytes:
    """The whole photo, rescaled by a random factor in ``SCALE`` and re-encoded as JPEG q70."""
    img = load_photo(path.read_bytes())
    side = round(img.width * rng.uniform(*SCALE))
    buf = io.BytesIO()
    img.resize((side, round(img.height * side / img.width)), Image.Resampling.LANCZOS).save(
        buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


@pytest.fixture(scope="module")
def vendor(tmp_path_factory) -> dict:
    """Folders: train / holdout (the photos as they are), copies (vendor copies of every train photo, one
    extra non-square copy and one noise image), others (vendor copies of photos in neither split)."""
    if (LFW / "demo" / "manifest.csv").is_file():
        assert PERSON not in _demo_people()
    photos = sorted((PEOPLE / PERSON).glob("*.jpg"))
    assert len(photos) >= N_TRAIN + N_HOLDOUT + N_OTHER
    rng = np.random.default_rng(SEED)
    order = [photos[i] for i in rng.permutation(len(photos))]
    train, holdout = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_HOLDOUT]
    others = order[N_TRAIN + N_HOLDOUT:N_TRAIN + N_HOLDOUT + N_OTHER]
    root = tmp_path_factory.mktemp("vendor")
    for name, files in (("train", train), ("holdout", holdout)):
        (root / name).mkdir()
        for p in files:
            shutil.copy(p, root / name / p.name)
    (root / "copies").mkdir()
    (root / "others").mkdir()
    sources = {}
    for i, p in enumerate(train):
        (root / "copies" / f"copy_{i:02d}.jpg").write_bytes(_vendor_copy(p, rng))
        sources[f"copy_{i:02d}.jpg"] = p.name
    for i, p in enumerate(others):
        (root / "others" / f"other_{i:02d}.jpg").write_bytes(_vendor_copy(p, rng))
    wide = load_photo(train[0].read_bytes())  # a non-square whole-frame copy: 250 x 210
    wide.crop((0, 20, wide.width, wide.height - 20)).save(root / "copies" / "wide_copy.jpg", quality=JPEG_QUALITY)
    Image.fromarray(noise_images(1, size=250, seed=SEED)[0]).save(root / "copies" / "noise.png")
    return {"root": root, "sources": sources, "train": [p.name for p in train]}


def _audit(vendor: dict, generated: str, **kw) -> dict:
    root = vendor["root"]
    return audit(root / "train", root / "holdout", root / generated, n_resamples=RESAMPLES, progress=False, **kw)


def test_whole_frame_copies_of_training_photos_are_extracted(vendor):
    out = _audit(vendor, "copies")
    mem, ident, meta = out["memorization"], out["identity"], out["meta"]
    rows = {r["file"]: r for r in out["per_image"]}
    assert meta["generated_framing"] == ALIGNED_BY_AUDIT and not out["skipped"]
    assert {r["framing"] for r in rows.values()} == {ALIGNED_BY_AUDIT}

    # Known answer: rate >= 0.9 over the 12 training photos, each extracted by its own copy.
    assert mem["extraction_rate"]["n"] == N_TRAIN
    assert mem["extraction_rate"]["value"] >= 0.9, mem["extraction_rate"]
    extracted = {e["train_file"]: e["generations"] for e in mem["extracted"]}
    own = [f for f, src in vendor["sources"].items() if f in extracted.get(src, [])]
    assert len(own) >= 0.9 * N_TRAIN
    assert "wide_copy.jpg" in extracted[vendor["train"][0]]  # non-square is fine when the audit aligns
    for f, src in vendor["sources"].items():
        assert rows[f]["nearest_train"] == src

    # The noise image: counted in FDFR (identity), skipped by memorisation with its reason.
    noise = rows["noise.png"]
    assert noise["face_found"] is False and noise["accepted"] is False
    assert "no face" in noise["memorization_skipped"] and "FDFR" in noise["memorization_skipped"]
    assert noise["nearest_train"] is None and noise["nearest_train_l2"] is None and noise["gap"] is None
    n_gen = N_TRAIN + 2
    assert ident["fdfr"]["n"] == n_gen and ident["fdfr"]["value"] == pytest.approx(1 / n_gen, abs=1e-5)
    assert meta["n"]["generated"] == n_gen and meta["n"]["generated_without_face"] == 1
    assert mem["gap"]["n"] == n_gen - 1 and meta["n"]["generated_memorization"] == n_gen - 1
    assert all(r["memorization_skipped"] is None for f, r in rows.items() if f != "noise.png")
    assert ident["verification_rate"]["value"] >= 0.9  # the copies are the person


def test_other_photos_of_the_person_are_not_extracted(vendor):
    out = _audit(vendor, "others")
    mem = out["memorization"]
    assert mem["extraction_rate"]["n"] == N_TRAIN
    assert mem["extraction_rate"]["value"] <= 0.05, mem["extraction_rate"]  # known answer
    assert mem["extracted"] == []
    assert all(r["framing"] == ALIGNED_BY_AUDIT and r["memorization_skipped"] is None for r in out["per_image"])
    assert out["identity"]["fdfr"]["value"] == 0.0
    assert out["identity"]["verification_rate"]["value"] >= 0.7  # the same person, not the same photos


def test_generated_aligned_takes_images_as_given(vendor, tmp_path):
    """``--generated-aligned`` keeps the old behaviour, for images already in the model's framing: the
    whole-frame copies are then compared unaligned with the aligned crops, and not found."""
    root = vendor["root"]
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "audit", "--train", str(root / "train"),
                             "--holdout", str(root / "holdout"), "--generated", str(root / "copies"),
                             "--generated-aligned", "--resamples", str(RESAMPLES), "--json"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["meta"]["generated_framing"] == AS_GIVEN
    assert {r["framing"] for r in out["per_image"]} == {AS_GIVEN}
    assert all(r["memorization_skipped"] is None for r in out["per_image"])
    skipped = {s["file"]: s["reason"] for s in out["skipped"]}
    assert set(skipped) == {"wide_copy.jpg"} and "not square" in skipped["wide_copy.jpg"]
    assert out["memorization"]["extraction_rate"]["value"] < 0.9  # what the default framing fixes
    assert out["memorization"]["gap"]["n"] == N_TRAIN + 1  # the noise image too: nothing is detected
