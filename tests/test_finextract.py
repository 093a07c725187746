"""FineXtract (Wu, Zhang & Wu, ICML 2025): the guided prediction is the paper's Eq. 7 on real diffusers
UNets; LoRA's base branch is the base model itself (adapters truly off); clique clustering recovers
planted clusters; ``workbench extract`` takes any model file ``workbench mia --model`` takes; the report
shows it with every number traced; on a DreamBooth over-fitted to five photos FineXtract reproduces a
training photo within δ at least as often as plain sampling from the same latents and the untouched base
extracts nothing (that its candidates also come closer on average is a recorded known answer: not
resolved at this scale)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.metrics import finextract as fx  # noqa: E402

PROMPT = "a photo of sks person"
PEOPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "people"


def _train(recipe_name: str, base: str, photos: list[Path], out: Path, **params) -> Path:
    from workbench.recipes import engine, registry

    recipe = registry.get_recipe(recipe_name)
    job = engine.TrainJob(base=base, train_images=photos, subject_id="fx-test", out_dir=out, device="cpu",
                          resolution=64, checkpoint_every=0)
    return recipe.train(job, recipe.params(**params)).artifact_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A WORKBENCH_HOME for the module's trained models."""
    root = tmp_path_factory.mktemp("fx-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_HOME", str(root / "home"))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def lora_artifact(store, random_base, crops, one_thread) -> Path:
    return _train("lora", str(random_base), crops, store / "lora", steps=3, lr=5e-2, batch_size=2)


@pytest.fixture(scope="module")
def none_artifact(store, random_base, crops) -> Path:
    return _train("none", str(random_base), crops, store / "none")


def _x(pair: fx.ModelPair, n: int = 2, seed: int = 0) -> torch.Tensor:
    return fx.start_latents(pair, range(n), seed)


# ---------------------------------------------------------------------------------------------------
# The guided prediction


def test_guided_prediction_equals_the_formula_on_a_toy_unet_pair(random_base, one_thread):
    from diffusers import UNet2DConditionModel

    from workbench.backbones.registry import load_backbone
    from workbench.diffusion import encode_prompt

    ft = load_backbone(str(random_base), "cpu")
    base = load_backbone(str(random_base), "cpu")
    torch.manual_seed(1)
    base.unet = UNet2DConditionModel.from_config(ft.unet.config).eval()  # a different model: a real pair
    pair = fx.ModelPair(pipe=ft, kind="full", recipe="dreambooth", caption=PROMPT, base_unet=base.unet,
                        base_pipe=base, amp=None)
    x, t, w, k = _x(pair), torch.tensor(500), 3.0, -0.02
    got = pair.eps(x, t, "finextract", w, k, 3.0)
    with torch.no_grad():
        e_base = base.unet(x, t, encoder_hidden_states=encode_prompt(base, "").expand(2, -1, -1)).sample
        e_ft = ft.unet(x, t, encoder_hidden_states=encode_prompt(ft, PROMPT).expand(2, -1, -1)).sample
    assert not torch.allclose(e_base, e_ft, atol=1e-3)
    expected = e_base + w * (e_ft - e_base) + k * e_base  # Eq. 7, written out
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert pair.calls == 2  # one ε_base(∅) and one ε_ft(c) per step

    # w = 1, k = 0: the fine-tuned model's own conditional prediction
    torch.testing.assert_close(pair.eps(x, t, "finextract", 1.0, 0.0, 3.0), e_ft, rtol=1e-5, atol=1e-5)
    # plain sampling: the fine-tuned model's classifier-free guidance, ε_ft(∅) + g (ε_ft(c) − ε_ft(∅))
    with torch.no_grad():
        e_ft_u = ft.unet(x, t, encoder_hidden_states=encode_prompt(ft, "").expand(2, -1, -1)).sample
    torch.testing.assert_close(pair.eps(x, t, "plain", w, k, 3.0), e_ft_u + 3.0 * (e_ft - e_ft_u),
                               rtol=1e-5, atol=1e-5)


def test_guided_eps_is_eq_7_on_arrays():
    b, f = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    np.testing.assert_allclose(fx.guided_eps(b, f, 5.0, 0.0), b + 5.0 * (f - b))
    np.testing.assert_allclose(fx.guided_eps(b, f, 1.0, 0.0), f)
    np.testing.assert_allclose(fx.guided_eps(b, f, 3.0, -0.02), b + 3 * (f - b) - 0.02 * b)


def test_lora_base_branch_is_the_base_model_with_adapters_truly_off(lora_artifact, random_base, one_thread):
    from workbench.backbones.registry import load_backbone
    from workbench.diffusion import encode_prompt

    pair = fx.load_pair(lora_artifact, None, "cpu", amp=None)
    assert pair.kind == "adapter" and pair.base_unet is None  # one UNet in memory
    base = load_backbone(str(random_base), "cpu")
    x, t = _x(pair), torch.tensor(400)
    with torch.no_grad():
        e_base = base.unet(x, t, encoder_hidden_states=encode_prompt(base, "").expand(2, -1, -1)).sample
        e_base_c = base.unet(x, t, encoder_hidden_states=encode_prompt(base, PROMPT).expand(2, -1, -1)).sample
    torch.testing.assert_close(pair.eps_base_uncond(x, t), e_base, rtol=1e-5, atol=1e-6)
    ft = pair.eps_ft(x, t, "cond")  # adapters back on afterwards: the LoRA changes the prediction
    assert (ft - e_base_c).abs().max() > 1e-3
    assert pair.calls == 2
    assert fx.FineXtractParams().resolved(pair.kind) == (5.0, 0.0)  # the authors' LoRA defaults


def test_both_methods_start_from_the_same_latents(none_artifact, store, crops, one_thread):
    """On the untouched base ε_ft = ε_base, so FineXtract with w = g, k = 0 *is* plain sampling: the
    images agree exactly only if image i of both methods starts from the same latent."""
    pair = fx.load_pair(none_artifact, None, "cpu", amp=None)
    assert pair.kind == "none"
    params = fx.FineXtractParams(guidance=3.0, fix_term=0.0, baseline_guidance=3.0, steps=3, per_photo=1,
                                 batch_size=2)
    files = fx.generate(pair, 3, params, store / "cache", fx.model_identity(none_artifact, None), progress=False)
    assert pair.calls == 2 * 2 * 2 * params.steps  # 2 methods × 2 batches × 2 calls per step ...
    assert fx.queries_per_image(params) == {"finextract": 6, "plain": 6}  # ... = 2 per step per image
    a = [fx.read_rgb(f) for f in files["finextract"]]
    b = [fx.read_rgb(f) for f in files["plain"]]
    for x, y in zip(a, b, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1
    assert np.abs(a[0].astype(int) - a[1].astype(int)).mean() > 1  # different latents, different images
    again = fx.generate(pair, 3, params, store / "cache", fx.model_identity(none_artifact, None), progress=False)
    assert again == files and pair.calls == 2 * 2 * 2 * params.steps  # resumed from the cache: no new calls


# ---------------------------------------------------------------------------------------------------
# Clustering


@pytest.mark.parametrize("seed", range(4))
def test_clustering_recovers_planted_clusters(seed):
    """Five planted clusters of 12 noisy copies of mutually unrelated "photos" (orthogonal centres):
    each planted cluster is the majority of exactly one clique and gives one candidate."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(300, 5)))[0].T * np.sqrt(300)
    labels = np.repeat(np.arange(5), 12)
    rng.shuffle(labels)
    points = centres[labels] + 0.6 * rng.normal(size=(len(labels), 300))
    res = fx.cluster_candidates(fx.descriptors(points), n_min=5)
    assert len(res.clusters) >= 5
    majority = [np.bincount(labels[c], minlength=5).argmax() for c in res.clusters[:5]]
    assert sorted(majority) == list(range(5))
    assert sum(len(c) for c in res.clusters[:5]) >= 58  # at most two stragglers in the whole set
    assert sorted(labels[res.candidates[:5]]) == list(range(5))  # one candidate per planted cluster
    for members, cand in zip(res.clusters, res.candidates, strict=True):
        assert cand in members


def test_clustering_raises_the_threshold_until_there_are_enough_clusters():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 100))
    points = centres[np.repeat([0, 1], 10)] + 0.8 * rng.normal(size=(20, 100))
    res = fx.cluster_candidates(fx.descriptors(points), n_min=6)
    assert len(res.clusters) >= 6 and res.thresholds_tried > 1
    assert sorted(i for c in res.clusters for i in c) == list(range(20))  # a partition of the generations


def test_a_re_encoded_training_photo_is_extracted_and_a_holdout_copy_is_not(crops):
    """``evaluate`` on known answers: generations that are copies of training photo 0 extract it (and only
    it); copies of a holdout photo extract nothing."""
    train = [fx.read_rgb(p) for p in crops[:3]]
    holdout = [fx.read_rgb(crops[3])]
    copies = {"finextract": [train[0]] * 6, "plain": [holdout[0]] * 6}
    r = fx.evaluate(copies, train, holdout, n_min=1, encoder=None, n_resamples=200)
    m = r["methods"]["finextract"]["metrics"]
    assert m["rate"]["value"] == pytest.approx(1 / 3) and m["rate"]["n"] == 3
    assert [p["extracted"] for p in r["methods"]["finextract"]["per_photo"]] == [True, False, False]
    p = r["methods"]["plain"]["metrics"]
    assert p["rate"]["value"] == 0.0 and p["holdout_rate"]["value"] == 1.0  # the control catches it
    assert r["difference"]["avg_similarity"]["n"] == 3
    flat = fx.flat_metrics(r)
    assert set(flat) == set(fx.KEYS) and flat["extraction.finextract.rate"] == m["rate"]


# ---------------------------------------------------------------------------------------------------
# Any model file (as `workbench mia --model`), and the report


def cli(*argv: str) -> tuple[int, str]:
    import io
    from contextlib import redirect_stdout

    from workbench.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


def test_extract_takes_a_kohya_lora_and_a_tar_of_it_like_mia(lora_artifact, random_base, crops, tmp_path, one_thread):
    """The workbench's LoRA, the same LoRA as a vendor's kohya file, and that file in a .tar: the same model,
    so the same generations, candidates and matches; the vendor's file needs the caption (--prompt)."""
    import shutil
    import tarfile

    from workbench.lifecycle import manifest
    from workbench.modelfile.kohya import convert_file

    done = json.loads((lora_artifact / "DONE.json").read_text())
    (tmp_path / "vendor").mkdir()
    kohya = convert_file(lora_artifact / done["files"]["lora"], tmp_path / "vendor" / "sks.safetensors")
    bundle = tmp_path / "vendor.tar"
    with tarfile.open(bundle, "w") as tar:
        tar.add(kohya, arcname="model/sks.safetensors")
    folders = {}
    for split, photos in (("train", crops[:3]), ("holdout", crops[3:])):
        folders[split] = tmp_path / split
        folders[split].mkdir()
        for p in photos:
            shutil.copy(p, folders[split])
    args = ("--base", str(random_base), "--train", str(folders["train"]), "--holdout", str(folders["holdout"]),
            "--per-photo", "2", "--steps", "2", "--encoder", "", "--resamples", "100", "--device", "cpu", "--json")

    def extract(model: Path, *extra: str) -> dict:
        rc, out = cli("extract", "--model", str(model), *args, *extra)
        assert rc == 0, out
        return json.loads(out)

    prompt = ("--prompt", PROMPT)
    run = extract(lora_artifact, "--cache", str(tmp_path / "c-run"))
    assert cli("extract", "--model", str(kohya), *args)[0] == 2  # no caption in a kohya file: say it, exit 2
    vendor = extract(kohya, "--cache", str(tmp_path / "c-file"), *prompt)
    bundled = extract(bundle, *prompt)  # default cache: the owner's folder, registered for erasure
    assert vendor["model"]["format"] == "kohya-lora" and bundled["model"]["container"] == "tar"
    for r in (vendor, bundled):
        assert r["caption"] == run["caption"] == PROMPT and r["params"]["w"] == 5.0  # the authors' LoRA w
        assert r["unet_calls_this_run"] == run["unet_calls_this_run"] == 2 * 2 * 2  # 2 methods x 2 steps x 2
        for m in fx.METHODS:
            assert r["methods"][m]["candidates"] == run["methods"][m]["candidates"]
            assert [p["registered_l2"] for p in r["methods"][m]["per_photo"]] == pytest.approx(
                [p["registered_l2"] for p in run["methods"][m]["per_photo"]], abs=2e-3)
    live = {a.path for a in manifest.live(bundled["owner"])}
    assert sum("/extraction/" in path for path in live) == 2 * 3 * 2  # both methods' images, erasable
    assert not any("/scratch/" in path for path in live)  # the extracted bundle is gone again


def test_report_shows_finextract_against_plain_with_each_candidate_beside_its_photo(
        lora_artifact, crops, tmp_path, monkeypatch, one_thread):
    """A real FineXtract measurement of a real LoRA, in a run's results.json: the report's section traces every
    number to it, embeds each training photo beside FineXtract's nearest candidate, and not a deleted image."""
    from report_fixtures import fixture_run, write_results
    from test_report import check_traceable, parse

    from workbench.lifecycle import manifest
    from workbench.report.html import render_report, write_report

    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    run_dir, results = fixture_run(home)
    assert 'id="extraction"' not in render_report(results, run_dir, figures={})  # no FineXtract, no section
    sid = results["run"]["subject_id"]
    photos = [home / "subjects" / sid / "fx" / c.name for c in crops]  # real photos inside the data root
    for crop, path in zip(crops, photos, strict=True):
        manifest.write_bytes(sid, "crop", path, crop.read_bytes())
    i = next(k for k, row in enumerate(results["rows"]) if row["label"] == "lora")
    flat, detail = fx.measure_extraction(lora_artifact, photos[:3], photos[3:], run_dir / "generations" / "lora" /
                                         "seed0", None, fx.FineXtractParams(per_photo=2, steps=2), "cpu", None, sid,
                                         run_dir)
    results["rows"][i]["metrics"] |= flat
    results["rows"][i]["extraction"] = {"finextract": detail}
    write_results(run_dir, results)
    text = write_report(run_dir).read_text(encoding="utf-8")
    check_traceable(text, results)
    section = text[text.index('<h2 id="extraction">'):text.index('<h2 id="distances">')]
    assert '<a href="#extraction">' in text and section.count("<img ") == 2 * 3  # 3 photos, each beside a candidate
    shown = {src for cls, src, _ in parse(section).traced if cls == "num"}
    base = f"/rows/{i}/extraction/finextract"
    for m in fx.METHODS:
        for key in ("rate", "avg_similarity", "holdout_rate", "holdout_avg_similarity"):
            assert {f"{base}/methods/{m}/metrics/{key}/{part}" for part in ("value", "n")} <= shown
        assert f"{base}/queries_per_image/{m}" in shown and f"{base}/methods/{m}/n_clusters" in shown
    assert f"{base}/difference/avg_similarity/value" in shown
    gone = detail["methods"]["finextract"]["per_photo"][0]["file"]
    assert not Path(gone).is_absolute() and (run_dir / gone).is_file()  # relative to the run folder
    (run_dir / gone).unlink()
    again = render_report(results, run_dir, figures={})
    assert "image not available" in again[again.index('<h2 id="extraction">'):again.index('<h2 id="distances">')]


# ---------------------------------------------------------------------------------------------------
# A real signal: the shipped tiny-face base, DreamBooth over-fitted to five photos


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """Five train and five holdout aligned 64 px crops of one LFW person outside the demo list."""
    from PIL import Image  # noqa: F401

    from workbench.subjects.decode import load_photo
    from workbench.subjects.faces import align_crop, detect_faces, main_face

    src = sorted((PEOPLE / "Abdullah_Gul").glob("*.jpg"))
    if not src:
        pytest.skip(f"no LFW people photos at {PEOPLE}")
    folder = tmp_path_factory.mktemp("person")
    out = []
    for i in np.random.default_rng(0).permutation(len(src)):
        img = load_photo(src[i].read_bytes())
        face = main_face(detect_faces(np.asarray(img), "yunet", 0.6))
        if face is not None:
            align_crop(img, face, 64).save(folder / f"{src[i].stem}.png")
            out.append(folder / f"{src[i].stem}.png")
        if len(out) == 10:
            break
    return out[:5], out[5:]


@pytest.fixture(scope="module")
def overfitted(store, person, one_thread):
    """FineXtract and plain sampling (10 generations per photo) of a DreamBooth over-fitted to five photos
    (600 steps, batch 5, no prior) and of the untouched base."""
    train, holdout = person
    dreambooth = _train("dreambooth", "tiny-face", train, store / "db-overfit", steps=600, batch_size=5,
                        prior_preservation=False)
    none = _train("none", "tiny-face", train, store / "none-tiny")
    params = fx.FineXtractParams(per_photo=10)
    res = {name: fx.run_finextract(art, train, holdout, store / "cache", params=params, n_resamples=1000,
                                   progress=False) for name, art in (("dreambooth", dreambooth), ("none", none))}
    for name, r in res.items():
        print(name, json.dumps({m: {k: v["metrics"][k] for k in ("rate", "avg_similarity", "best_registered_l2")}
                                | {"all": v["all_generations"]} for m, v in r["methods"].items()}
                               | {"diff": r["difference"]}))
    return res


@pytest.mark.slow
def test_finextract_extracts_from_an_overfitted_dreambooth_at_least_as_often_as_plain_and_the_base_nothing(
        overfitted):
    db = overfitted["dreambooth"]
    fxm, plm = db["methods"]["finextract"]["metrics"], db["methods"]["plain"]["metrics"]
    assert db["params"]["w"] == 3.0 and db["params"]["k"] == -0.02  # the authors' DreamBooth defaults
    assert db["queries_per_image"] == {"finextract": 100, "plain": 100}
    assert db["unet_calls_this_run"] in (0, 2 * 100 * 4)  # 50 images per method in 4 batches of <= 16 (0: cached)
    assert fxm["rate"]["n"] == 5 and db["difference"]["avg_similarity"]["n"] == 5
    assert fxm["rate"]["value"] >= plm["rate"]["value"]
    assert fxm["rate"]["value"] > 0  # a training photo (or its mirror image) reproduced within delta
    assert fxm["holdout_rate"]["value"] == 0.0  # ... and no holdout photo: membership, not the person
    nm = overfitted["none"]["methods"]
    assert nm["finextract"]["metrics"]["rate"]["value"] == 0.0 and nm["plain"]["metrics"]["rate"]["value"] == 0.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known answer at this scale (measured 2026-12-06, tiny-face 64 px, 5 photos, "
                   "50 generations per method): the paired similarity difference FineXtract - plain is -0.083 "
                   "[-0.241, 0.076] after clustering and +0.021 [-0.115, 0.105] over all generations; FineXtract "
                   "collapses onto 3 of the 5 photos (2 within delta) while plain sampling spreads over all 5, and "
                   "5 paired photos cannot resolve the difference")
def test_finextract_candidates_come_closer_to_the_training_photos_than_plain_sampling(overfitted):
    assert overfitted["dreambooth"]["difference"]["avg_similarity"]["ci_low"] > 0
