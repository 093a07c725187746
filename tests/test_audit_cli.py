"""``workbench audit`` on plain folders: the JSON's keys and shapes, skipped files, exit codes.

Folders are built under ``tmp_path`` from the shared LFW copy (train: Colin Powell's demo photos 1-15,
holdout 16-20; generated: 64 px copies of six training crops plus other people's crops as concept-bleed
prompts), with broken and unusable files mixed in. Those generations are in the model's framing already,
so the first test passes ``--generated-aligned``; the default (faces detected and aligned by the audit,
for a vendor's whole-frame photos) has its known answers in ``test_audit_framing.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from metrics_helpers import OTHERS, SUBJECT, copies_of_train, crop, demo_photo, needs_lfw, noise_images, write_pngs
from PIL import Image

from workbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
METRIC_KEYS = {"value", "ci_low", "ci_high", "n"}

pytestmark = needs_lfw


def _copy_photos(folder: Path, numbers) -> None:
    folder.mkdir(parents=True)
    for n in numbers:
        shutil.copy(demo_photo(SUBJECT, n), folder / demo_photo(SUBJECT, n).name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    _copy_photos(root / "train", range(1, 16))
    _copy_photos(root / "holdout", range(16, 21))
    (root / "train" / "notes.txt").write_text("not a photo")
    Image.fromarray(noise_images(1, size=250)[0]).save(root / "train" / "noise.png")
    write_pngs(root / "generated" / "identifier", copies_of_train(range(1, 7)), prefix="copy")
    write_pngs(root / "generated" / "no_identifier", [crop(p, 20) for p in OTHERS[:3]], prefix="bleed")
    (root / "generated" / "identifier" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(root / "generated" / "identifier" / "wide.png")
    return root


def _run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBENCH_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _assert_metric(m: dict) -> None:
    assert METRIC_KEYS <= set(m), m
    if m["value"] is not None:
        assert m["ci_low"] <= m["value"] <= m["ci_high"], m


def test_audit_json_has_every_metric_with_its_interval(folders, tmp_path):
    result = _run("audit", "--train", str(folders / "train"), "--holdout", str(folders / "holdout"),
                  "--generated", str(folders / "generated"), "--generated-aligned", "--resamples", "500", "--json",
                  home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"identity", "identity_by_encoder", "memorization", "per_image", "skipped", "meta"}

    ident = out["identity"]
    for key in ("fdfr", "ism_holdout", "ism_train", "ism_train_minus_holdout", "verification_rate"):
        _assert_metric(ident[key])
    assert ident["encoder"] == "sface" and set(out["identity_by_encoder"]) == {"sface"}
    assert ident["fdfr"]["value"] == 0.0 and ident["fdfr"]["n"] == 6  # the identifier group
    assert ident["verification_rate"]["value"] == 1.0  # copies of the subject's photos
    assert ident["ism_train_minus_holdout"]["value"] > 0  # they resemble the train photos more
    assert set(ident["by_group"]) == {"identifier", "no_identifier"}
    assert ident["concept_bleed"]["verification_rate"]["value"] == 0.0  # other people: not the subject
    assert ident["concept_bleed"]["verification_rate"]["n"] == 3

    mem = out["memorization"]
    for key in ("extraction_rate", "extraction_rate_unregistered", "gap", "gap_size_matched", "min_l2",
                "nearest_train_tiled_l2", "nearest_train_registered_l2", "nearest_holdout_l2",
                "relative_distance", "diversity"):
        _assert_metric(mem[key])
    assert mem["extraction_rate"]["n"] == 15  # two train files were skipped; 15 photos remain
    assert mem["extraction_rate"]["value"] == pytest.approx(6 / 15)  # six training photos were copied
    assert sorted(e["train_file"] for e in mem["extracted"]) == [demo_photo(SUBJECT, n).name for n in range(1, 7)]
    assert mem["gap"]["n"] == 9 and mem["copy_similarity"]["available"] is False

    assert len(out["per_image"]) == 9
    row = next(r for r in out["per_image"] if r["file"] == "identifier/copy_000.png")
    assert row["nearest_train"] == demo_photo(SUBJECT, 1).name and row["face_found"] is True
    for key in ("group", "nearest_train_l2", "nearest_holdout_l2", "ism_holdout", "gap", "accepted"):
        assert key in row
    assert row["framing"] == "as given" and row["memorization_skipped"] is None

    skipped = {(s["folder"], s["file"]): s["reason"] for s in out["skipped"]}
    assert set(skipped) == {("train", "notes.txt"), ("train", "noise.png"), ("generated", "identifier/broken.png"),
                            ("generated", "identifier/wide.png")}
    assert "not a JPEG, PNG or WEBP" in skipped[("train", "notes.txt")]
    assert "no face" in skipped[("train", "noise.png")]
    assert "not square" in skipped[("generated", "identifier/wide.png")]

    meta = out["meta"]
    assert meta["n"]["train"] == 15 and meta["n"]["holdout"] == 5 and meta["n"]["generated"] == 9
    assert meta["generated_framing"] == "as given"
    assert meta["size"] == 64 and meta["encoders"]["sface"]["threshold"] > 0 and meta["encoders"]["sface"]["far"]
    assert meta["delta"]["registered_l2"] > 0 and "calibrate_delta" in meta["delta"]["provenance"]
    assert meta["higher_is_better"]["identity.fdfr"] is False
    assert meta["higher_is_better"]["memorization.extraction_rate"] is False
    assert "Carlini" in meta["citations"]["extraction_rate"] and "Anti-DreamBooth" in meta["citations"]["fdfr"]


def test_audit_with_aligned_crops_and_two_encoders(tmp_path):
    train = write_pngs(tmp_path / "train", [crop(SUBJECT, n) for n in range(1, 6)])
    write_pngs(tmp_path / "holdout", [crop(SUBJECT, n) for n in range(16, 19)])
    write_pngs(tmp_path / "gen", [crop(SUBJECT, 12), crop(OTHERS[1], 2)])
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "train" / "not_square.png")
    result = _run("audit", "--train", str(train[0].parent), "--holdout", str(tmp_path / "holdout"),
                  "--generated", str(tmp_path / "gen"), "--aligned", "--encoder", "sface", "--encoder", "dlib",
                  "--resamples", "200", "--json", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out["identity_by_encoder"]) == ["sface", "dlib"]
    assert out["identity"] == out["identity_by_encoder"]["sface"]
    assert out["meta"]["primary_encoder"] == "sface" and out["meta"]["aligned_input"] is True
    assert [s["file"] for s in out["skipped"]] == ["not_square.png"]
    for name in ("sface", "dlib"):
        _assert_metric(out["identity_by_encoder"][name]["verification_rate"])
        assert out["identity_by_encoder"][name]["verification_rate"]["value"] == 0.5  # the subject, not the other
        assert [r["by_encoder"][name]["accepted"] for r in out["per_image"]] == [True, False]


def test_audit_exits_2_with_a_message_for_a_missing_or_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_pngs(tmp_path / "some", noise_images(1))
    args = ["audit", "--train", str(tmp_path / "some"), "--holdout", str(tmp_path / "some")]
    assert main([*args, "--generated", str(tmp_path / "absent")]) == 2
    assert "--generated" in capsys.readouterr().err
    assert main([*args, "--generated", str(tmp_path / "empty")]) == 2
    assert "the folder is empty" in capsys.readouterr().err
    assert main([*args, "--generated", str(tmp_path / "some"), "--encoder", "nope"]) == 2
    assert "unknown identity encoder" in capsys.readouterr().err


def test_audit_exits_2_when_no_training_photo_has_a_face(tmp_path, capsys):
    write_pngs(tmp_path / "noise", noise_images(2, size=128))
    assert main(["audit", "--train", str(tmp_path / "noise"), "--holdout", str(tmp_path / "noise"),
                 "--generated", str(tmp_path / "noise")]) == 2
    err = capsys.readouterr().err
    assert "--train" in err and "no usable photo" in err and "no face found" in err


def test_audit_without_json_prints_a_readable_summary(tmp_path, capsys):
    write_pngs(tmp_path / "train", [crop(SUBJECT, n) for n in (1, 2, 3)])
    write_pngs(tmp_path / "holdout", [crop(SUBJECT, n) for n in (16, 17)])
    write_pngs(tmp_path / "gen", [crop(SUBJECT, 12), noise_images(1)[0]])
    assert main(["audit", "--train", str(tmp_path / "train"), "--holdout", str(tmp_path / "holdout"),
                 "--generated", str(tmp_path / "gen"), "--aligned", "--resamples", "100"]) == 0
    text = capsys.readouterr().out
    assert "fdfr                         0.500" in text  # one of the two generations is noise
    assert "generated images aligned by audit; 1 without a face" in text
    assert "memorisation skipped generated/img_001.png: no face found" in text
    for key in ("verification_rate", "extraction_rate", "gap", "copy_similarity", "lower is better"):
        assert key in text
