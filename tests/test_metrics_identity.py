"""Identity encoders and metrics on real LFW photos (METRICS.md known answers), and encoder calibration.

Known answers: other photos of the subject are verified at a high rate; photos of other people at about
the encoder's false-accept rate; Gaussian noise has no face (FDFR = 1); copies of training photos score
higher against the train photos than against the holdout photos (the leakage signal).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from metrics_helpers import OTHERS, SUBJECT, copies_of_train, crop, demo_photo, needs_lfw, noise_images

from workbench.errors import UserError
from workbench.metrics import calibration
from workbench.metrics.encoders import (
    ENCODERS,
    arcface_files,
    embed,
    embed_files,
    get_encoder,
    load_insightface_recogniser,
    sface_model_path,
)
from workbench.metrics.identity import identity_metrics


@pytest.fixture(scope="module")
def sface_refs():
    """SFace embeddings of the subject's 64 px crops: photos 1-20 (index = photo number - 1)."""
    emb, found = embed([crop(SUBJECT, n) for n in range(1, 21)], "sface", progress=False)
    assert found.all()
    return emb, found


def _metrics(gen, refs, train=range(1, 11), holdout=range(16, 21), groups=None, encoder="sface"):
    emb, found = refs
    g_emb, g_found = embed(gen, encoder, progress=False) if isinstance(gen, list) else gen
    t = [n - 1 for n in train]
    h = [n - 1 for n in holdout]
    return identity_metrics(g_emb, g_found, emb[t], found[t], emb[h], found[h], get_encoder(encoder).info,
                            groups=groups, n_resamples=300)


def test_every_encoder_declares_its_scores():
    assert {"sface", "dlib", "arcface"} <= set(ENCODERS)
    for name, enc in ENCODERS.items():
        info = enc.info
        assert info.name == name and info.dim > 0 and info.distance == "cosine"
        assert 0.9 < info.lfw_accuracy_published < 1 and info.citation and info.calibration
    for name in ("sface", "dlib"):
        info = get_encoder(name).info
        assert info.far == 1e-3 and 0 < info.threshold < 1
        assert "verify-encoder" in info.calibration and "pairsDevTrain" in info.calibration
    with pytest.raises(UserError, match="unknown identity encoder"):
        get_encoder("facenet")


def test_gaussian_noise_has_no_face_so_fdfr_is_one(sface_refs):
    noise = noise_images(6)
    g_emb, g_found = embed(noise, "sface", progress=False)
    assert not g_found.any() and not g_emb.any()  # no face: found False, row all zeros
    m = _metrics((g_emb, g_found), sface_refs)
    assert m["fdfr"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 6,
                         "note": "a share of 6 generations moves in steps of 1/6 = 0.167"}
    assert m["ism_holdout"]["value"] is None and m["ism_holdout"]["n"] == 0 and "no generation" in \
        m["ism_holdout"]["note"]
    assert m["verification_rate"]["value"] == 0.0  # an image without a face is never accepted


@needs_lfw
def test_other_photos_of_the_subject_are_verified_at_a_high_rate(sface_refs):
    gen = [crop(SUBJECT, n) for n in range(11, 16)]  # same person, never trained on
    m = _metrics(gen, sface_refs)
    assert m["fdfr"]["value"] == 0.0
    assert m["verification_rate"]["value"] >= 0.8 and m["verification_rate"]["n"] == 5
    assert m["ism_holdout"]["value"] > 0.5
    assert m["ism_holdout"]["ci_low"] <= m["ism_holdout"]["value"] <= m["ism_holdout"]["ci_high"]
    assert abs(m["ism_train_minus_holdout"]["value"]) < 0.1  # learned the person, not the photos
    assert m["threshold"] == get_encoder("sface").info.threshold and m["threshold_far"] == 1e-3


@needs_lfw
def test_other_people_are_accepted_at_about_the_false_accept_rate(sface_refs):
    gen = [crop(person, n) for person in OTHERS for n in (16, 18, 20)]  # 27 photos of 9 other people
    m = _metrics(gen, sface_refs)
    n = m["verification_rate"]["n"]
    accepted = round(m["verification_rate"]["value"] * n)
    # FAR = 1e-3 per pair: expected 0.03 false accepts in 27; allow one.
    assert n == 27 and accepted <= 1
    assert m["ism_holdout"]["value"] < 0.2


@needs_lfw
def test_copies_of_training_photos_score_higher_against_train_than_holdout(sface_refs):
    m = _metrics(copies_of_train(range(1, 11)), sface_refs)
    assert m["ism_train_minus_holdout"]["value"] > 0.05
    assert m["ism_train_minus_holdout"]["ci_low"] > 0
    assert m["verification_rate"]["value"] >= 0.8  # copies are, of course, the subject


@needs_lfw
def test_prompt_groups_score_fidelity_and_concept_bleed_separately(sface_refs):
    gen = [crop(SUBJECT, n) for n in range(11, 16)] + [crop(p, 17) for p in OTHERS[:4]]
    groups = ["identifier"] * 5 + ["no_identifier"] * 4
    m = _metrics(gen, sface_refs, groups=groups)
    assert m["scope"] == "generations of the 'identifier' prompt group"
    assert m["verification_rate"]["n"] == 5 and m["verification_rate"]["value"] >= 0.8
    assert set(m["by_group"]) == {"identifier", "no_identifier"}
    assert m["concept_bleed"]["verification_rate"]["n"] == 4
    assert m["concept_bleed"]["verification_rate"]["value"] <= 0.25
    assert m["concept_bleed"]["ism_holdout"]["value"] < m["ism_holdout"]["value"]


@needs_lfw
def test_dlib_tells_the_subject_from_other_people():
    refs = embed([crop(SUBJECT, n) for n in (1, 2, 3, 16, 17, 18)], "dlib", progress=False)
    gen = [crop(SUBJECT, 11), crop(SUBJECT, 12), crop(OTHERS[0], 1), crop(OTHERS[5], 1)]
    m = _metrics(gen, refs, train=(1, 2, 3), holdout=(4, 5, 6), groups=["a", "a", "b", "b"], encoder="dlib")
    assert m["by_group"]["a"]["verification_rate"]["value"] == 1.0
    assert m["by_group"]["b"]["verification_rate"]["value"] == 0.0
    assert m["by_group"]["a"]["ism_holdout"]["value"] > m["by_group"]["b"]["ism_holdout"]["value"]


@needs_lfw
def test_dlib_embeds_dlibs_own_150px_chip_of_a_real_photo():
    """The dlib path feeds its ResNet dlib's own alignment: 5-point shape predictor + get_face_chip(150, 0.25)."""
    from workbench.metrics.encoders import dlib_descriptor, dlib_face_chip, dlib_models, main_face, upscale
    from workbench.subjects.decode import load_photo

    dlib, predictor, recogniser = dlib_models()
    rgb = np.asarray(load_photo(demo_photo(SUBJECT, 1).read_bytes()))
    chip = dlib_face_chip(rgb)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    big = upscale(rgb)
    x, y, w, h = main_face(big).box
    shape = predictor(big, dlib.rectangle(round(x), round(y), round(x + w), round(y + h)))
    np.testing.assert_array_equal(chip, dlib.get_face_chip(big, shape, size=150, padding=0.25))
    # ... which is the chip dlib itself cuts inside compute_face_descriptor(image, shape):
    own = np.array(recogniser.compute_face_descriptor(big, shape, 0, 0.25))
    np.testing.assert_allclose(np.array(recogniser.compute_face_descriptor(chip)), own, atol=1e-5)
    # dlib's own detector (HOG) instead of the YuNet box: the same chip up to a pixel or two of landmark.
    hog = max(dlib.get_frontal_face_detector()(big, 1), key=lambda r: r.area())
    hog_chip = dlib.get_face_chip(big, predictor(big, hog), size=150, padding=0.25)
    assert np.abs(chip.astype(float) - hog_chip).mean() < 12
    # The embedding: the mean of the chip's and its mirror image's raw descriptors, L2-normalised.
    both = [np.array(recogniser.compute_face_descriptor(c)) for c in (chip, np.ascontiguousarray(chip[:, ::-1]))]
    expected = np.mean(both, axis=0) / np.linalg.norm(np.mean(both, axis=0))
    np.testing.assert_allclose(dlib_descriptor(chip), np.mean(both, axis=0), atol=1e-5)
    emb, found = embed([rgb], "dlib", progress=False)
    assert found[0] and float(emb[0] @ expected) > 1 - 1e-6


@needs_lfw
def test_sface_embeds_its_own_alignCrop_in_bgr():
    import cv2

    from workbench.metrics.encoders import main_face, sface_crop, sface_model, upscale
    from workbench.subjects.decode import load_photo

    rgb = np.asarray(load_photo(demo_photo(SUBJECT, 1).read_bytes()))
    crop_ = sface_crop(rgb)
    assert crop_.shape == (112, 112, 3)
    big = upscale(rgb)
    face = main_face(big)
    row = np.array([*face.box, *face.landmarks.ravel(), face.score], dtype=np.float32)
    np.testing.assert_array_equal(crop_, sface_model().alignCrop(cv2.cvtColor(big, cv2.COLOR_RGB2BGR), row))
    emb, found = embed([rgb], "sface", progress=False)
    ref = sface_model().feature(crop_).ravel()
    assert found[0] and float(emb[0] @ ref) / np.linalg.norm(ref) > 1 - 1e-6


PAIRS = Path(__file__).resolve().parents[1].parent / "shared/data/lfw/pairs_devtrain"


@pytest.mark.skipif(not (PAIRS / "pairs.csv").is_file(), reason=f"no LFW pairsDevTrain at {PAIRS}")
def test_lfw_pairs_embed_the_central_face_not_a_bigger_bystander():
    """Laura_Bush_0032 is centred on her, with George Bush larger beside her: the product's rule (largest
    face) embeds him, LFW's rule (central face, what verify-encoder uses) embeds her."""
    from workbench.subjects.decode import load_photo

    her, other = (np.asarray(load_photo((PAIRS / "Laura_Bush" / f"Laura_Bush_{n:04d}.jpg").read_bytes()))
                  for n in (32, 4))
    ref, _ = embed([other], "sface", progress=False)
    largest, _ = embed([her], "sface", progress=False)
    central, _ = embed([her], "sface", progress=False, pick="central")
    assert float(largest[0] @ ref[0]) < 0.15 < 0.3 < float(central[0] @ ref[0])
    with pytest.raises(ValueError, match="pick"):
        embed([her], "sface", progress=False, pick="middle")


@pytest.mark.skipif(not (PAIRS / "pairs.csv").is_file(), reason=f"no LFW pairsDevTrain at {PAIRS}")
@pytest.mark.parametrize("encoder", ["sface", "dlib"])
def test_shipped_threshold_verifies_a_sample_of_lfw_pairs(encoder, tmp_path, monkeypatch):
    """24 of pairsDevTrain's 2,200 pairs (every 92nd: 12 same, 12 different person), seconds not minutes.

    At the shipped FAR-1e-3 threshold every impostor pair is rejected and nearly every genuine one
    accepted (TAR at FAR 1e-3 on all 2,200 pairs: sface 0.98, dlib 0.95)."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    pairs = calibration.read_pairs(PAIRS / "pairs.csv")[::92]
    assert len(pairs) == 24 and sum(p.same for p in pairs) == 12
    scores, same, scored = calibration.pair_scores(pairs, PAIRS, encoder, cache=False, progress=False)
    assert scored.all()
    info = get_encoder(encoder).info
    accepted = scores >= info.threshold
    assert not accepted[~same].any()
    assert accepted[same].sum() >= 11
    assert calibration.accuracy(scores, same, calibration.best_threshold(scores, same)) >= 0.95


def test_images_must_be_rgb_uint8():
    with pytest.raises(ValueError, match="RGB uint8"):
        embed([np.zeros((64, 64), dtype=np.uint8)], "sface", progress=False)
    emb, found = embed([], "sface")
    assert emb.shape == (0, 128) and found.shape == (0,)


# --- arcface: insightface's loading code, on the local SFace ONNX file ------------------------------


def test_arcface_without_its_pack_names_the_expected_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_INSIGHTFACE_ROOT", str(tmp_path))
    with pytest.raises(UserError) as err:
        arcface_files()
    text = str(err.value)
    assert str(tmp_path / "buffalo_l") in text and "w600k_r50.onnx" in text and "buffalo_l.zip" in text
    (tmp_path / "buffalo_l").mkdir()
    (tmp_path / "buffalo_l" / "w600k_r50.onnx").write_bytes(b"")
    with pytest.raises(UserError, match="det_10g.onnx"):
        embed([noise_images(1)[0]], "arcface", progress=False)


def _runnable_sface_copy(tmp_path: Path) -> Path:
    """The int8 SFace file lists 29 weight names as graph inputs that no node reads (the quantiser kept
    them); onnxruntime insists on being fed every graph input, so it cannot run the file as shipped.
    Dropping those dangling inputs (no weight or node changes) gives a file it runs."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(sface_model_path()))
    known = {i.name for i in model.graph.initializer}
    used = {x for node in model.graph.node for x in node.input}
    dangling = [i for i in model.graph.input if i.name not in known and i.name not in used]
    assert len(dangling) == 29
    for i in dangling:
        model.graph.input.remove(i)
    path = tmp_path / "w600k_sface.onnx"
    onnx.save(model, str(path))
    return path


def test_insightface_model_zoo_routes_sface_to_arcface_onnx():
    pytest.importorskip("insightface")
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = load_insightface_recogniser(sface_model_path())  # the shipped file: loads and routes
    assert isinstance(model, ArcFaceONNX) and model.input_size == (112, 112) and model.taskname == "recognition"
    assert (model.input_mean, model.input_std) == (127.5, 127.5)  # insightface's guess, wrong for SFace


@needs_lfw
def test_insightface_recogniser_reproduces_opencv_sface_with_mean_0_std_1(tmp_path):
    pytest.importorskip("insightface")
    import cv2

    from workbench.metrics.encoders import arcface_embed_aligned, main_face, upscale

    path = _runnable_sface_copy(tmp_path)
    model = load_insightface_recogniser(path, input_mean=0.0, input_std=1.0)
    guessed = load_insightface_recogniser(path)  # insightface's own normalisation guess
    cv_model = cv2.FaceRecognizerSF.create(str(sface_model_path()), "")
    for n in (1, 16):
        big = upscale(crop(SUBJECT, n, 128))
        face = main_face(big)
        row = np.array([*face.box, *face.landmarks.ravel(), face.score], dtype=np.float32)
        aligned = cv_model.alignCrop(np.ascontiguousarray(big[:, :, ::-1]), row)  # 112x112 BGR
        reference = cv_model.feature(aligned).ravel()
        reference /= np.linalg.norm(reference)
        assert float(arcface_embed_aligned(model, aligned) @ reference) > 0.9999
        assert float(arcface_embed_aligned(guessed, aligned) @ reference) < 0.99


# --- calibration -------------------------------------------------------------------------------------


def test_best_threshold_maximises_accuracy():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    scores = np.r_[rng.normal(0.6, 0.15, 60), rng.normal(0.1, 0.15, 60)]
    t = calibration.best_threshold(scores, same)
    brute = max(calibration.accuracy(scores, same, c) for c in np.r_[scores, scores + 1e-9])
    assert calibration.accuracy(scores, same, t) == pytest.approx(brute)


def test_threshold_at_far_lets_through_floor_far_times_n_negatives():
    neg = np.linspace(0.0, 0.5, 1100)
    pos = np.full(50, 0.9)
    scores, same = np.r_[pos, neg], np.r_[np.ones(50, bool), np.zeros(1100, bool)]
    r = calibration.threshold_at_far(scores, same, 1e-3)
    assert r["allowed_false_accepts"] == 1 and r["n_negative"] == 1100
    assert int(np.sum(neg >= r["threshold"])) == 1 and r["achieved_far"] == pytest.approx(1 / 1100)
    assert r["tar"] == 1.0 and r["far_resolution"] == pytest.approx(1 / 1100)
    assert calibration.threshold_at_far(scores, same, 1e-2)["allowed_false_accepts"] == 11


def test_folds_split_positives_and_negatives_into_ten_blocks():
    same = np.r_[np.ones(1100, bool), np.zeros(1100, bool)]
    fold = calibration.folds(same)
    assert all(np.sum((fold == k) & same) == 110 and np.sum((fold == k) & ~same) == 110 for k in range(10))


def _pairs_csv(path: Path, same_pairs, diff_pairs) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "same"])
        for a, b in same_pairs:
            w.writerow([a, b, 1])
        for a, b in diff_pairs:
            w.writerow([a, b, 0])
    return path


def _rel(person: str, n: int) -> str:
    return demo_photo(person, n).relative_to(demo_photo(person, n).parents[1]).as_posix()


def test_read_pairs_refuses_a_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UserError, match="missing column"):
        calibration.read_pairs(bad)
    bad.write_text("path_a,path_b,same\nx.jpg,y.jpg,maybe\n")
    with pytest.raises(UserError, match="write 1 or 0"):
        calibration.read_pairs(bad)
    with pytest.raises(UserError, match="not found"):
        calibration.read_pairs(tmp_path / "absent.csv")


@needs_lfw
def test_verify_encoder_cli_reports_accuracy_and_the_far_threshold(tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    people = (SUBJECT, *OTHERS)
    same = [(_rel(p, 1), _rel(p, 2)) for p in people]
    diff = [(_rel(p, 1), _rel(q, 2)) for p, q in zip(people, people[1:] + people[:1], strict=True)]
    test_csv = _pairs_csv(tmp_path / "test.csv", same, diff)
    cal_csv = _pairs_csv(tmp_path / "cal.csv", [(_rel(p, 3), _rel(p, 4)) for p in people],
                         [(_rel(p, 3), _rel(q, 4)) for p, q in zip(people, people[2:] + people[:2], strict=True)])
    root = str(demo_photo(SUBJECT, 1).parents[1])

    assert main(["verify-encoder", "--pairs", str(test_csv), "--root", root, "--json"]) == 0
    cv = json.loads(capsys.readouterr().out)
    assert cv["encoder"] == "sface" and cv["n_pairs"] == 20 and cv["n_pairs_no_face"] == 0
    assert cv["accuracy"] >= 0.9 and cv["accuracy_std"] is not None and len(cv["fold_accuracies"]) == 10
    assert "10-fold" in cv["protocol"] and cv["at_far"]["n_negative"] == 10
    cached = list((tmp_path / "home" / "cache" / "embeddings").rglob("*.npy"))
    assert len(cached) == 20  # one per distinct public benchmark file

    assert main(["verify-encoder", "--pairs", str(test_csv), "--root", root, "--calibrate-pairs",
                 str(cal_csv), "--far", "0.1", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["accuracy"] >= 0.9 and held["accuracy_std"] is None and held["n_calibration_pairs"] == 20
    assert held["at_far"]["allowed_false_accepts"] == 1 and "achieved_far_on_test_pairs" in held["at_far"]
    for key in ("encoder", "accuracy", "threshold", "n_pairs"):
        assert key in cv and key in held


@needs_lfw
def test_embed_files_caches_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    files = [demo_photo(SUBJECT, 1), demo_photo(SUBJECT, 2)]
    plain, ok = embed_files(files, "sface", cache=False, progress=False)
    assert ok.all() and not (tmp_path / "cache").exists()
    first, _ = embed_files(files, "sface", cache=True, progress=False)
    assert len(list((tmp_path / "cache" / "embeddings").rglob("*.npy"))) == 2
    again, _ = embed_files(files, "sface", cache=True, progress=False)
    np.testing.assert_allclose(first, plain, atol=1e-6)
    np.testing.assert_array_equal(again, first)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["sface", "dlib"])
def test_lfw_pairs_devtrain_accuracy_is_near_the_published_figure(encoder, tmp_path, monkeypatch):
    """Full pairsDevTrain, 10-fold CV (minutes: 3,443 photos). Published LFW: SFace 99.40%, dlib 99.38%
    (100 jittered crops; 99.13% with one). Measured 2026-12-06: sface 99.50%, dlib 98.86% (2 views)."""
    pairs = Path(demo_photo(SUBJECT, 1)).parents[2] / "pairs_devtrain"
    if not (pairs / "pairs.csv").is_file():
        pytest.skip(f"no pairsDevTrain at {pairs}")
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    report = calibration.verify_encoder(pairs / "pairs.csv", pairs, encoder, cache=False, progress=False)
    info = get_encoder(encoder).info
    assert report["n_pairs"] == 2200
    assert report["accuracy"] > info.lfw_accuracy_published - 0.006
    # The shipped threshold is what this calibration gives (rounded up to 4 decimals).
    assert report["at_far"]["threshold"] == pytest.approx(info.threshold, abs=2e-4)
