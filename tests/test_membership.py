"""Membership inference: the ROC metrics equal sklearn's and ml_privacy_meter's definitions on synthetic
scores; a small diffusers model over-fitted to ten LFW photos through the real DreamBooth recipe is
caught (loss-attack AUC ≥ 0.9); the untouched base it started from is not (AUC CI contains 0.5)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from metrics_helpers import build_small_pipeline  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.metrics import roc_curve as sk_roc_curve  # noqa: E402

from workbench.errors import UserError  # noqa: E402
from workbench.metrics import roc  # noqa: E402
from workbench.metrics.membership import ATTACKS, membership_inference  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "demo"
PERSON = "Colin_Powell"
RES = 32  # image size of the small test model (latents 16×16×4)
PROMPT = "a photo of sks person"
OVERFIT_STEPS = 200  # full-UNet DreamBooth steps on 10 photos (batch 10, lr 1e-3)

needs_lfw = pytest.mark.skipif(not DEMO.is_dir(), reason=f"no LFW demo photos at {DEMO}")


# ---------------------------------------------------------------------------------------------------
# (a) ROC metrics on synthetic scores


def ml_privacy_meter_tpr_at_1pct(members, nonmembers, drop_intermediate: bool = True) -> float:
    """privacytrustlab/ml_privacy_meter, audit.py, compute_attack_results, written out directly."""
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    fpr, tpr, _ = sk_roc_curve(y, np.r_[members, nonmembers], drop_intermediate=drop_intermediate)
    return tpr[np.where(fpr <= 0.01)[0][-1]]


def synthetic(n_m: int, n_n: int, shift: float, seed: int, decimals: int | None = None):
    """Members ~ N(shift, 1), non-members ~ N(0, 1); rounding makes ties (within and across groups)."""
    rng = np.random.default_rng(seed)
    m, n = rng.normal(shift, 1.0, n_m), rng.normal(0.0, 1.0, n_n)
    if decimals is not None:
        m, n = np.round(m, decimals), np.round(n, decimals)
    return m, n


@pytest.mark.parametrize("n_m,n_n,shift,decimals", [(15, 5, 1.0, None), (15, 5, 1.0, 0), (200, 300, 1.5, None),
                                                     (200, 300, 1.5, 1), (50, 50, 0.0, 0), (7, 9, 3.0, None)])
def test_auc_and_curve_equal_sklearn_including_ties(n_m, n_n, shift, decimals):
    for seed in range(5):
        m, n = synthetic(n_m, n_n, shift, seed, decimals)
        y = np.r_[np.ones(n_m), np.zeros(n_n)]
        assert roc.roc_auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]), abs=1e-12)
        fpr, tpr, thr = roc.roc_curve(m, n)
        sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, np.r_[m, n], drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)
        np.testing.assert_allclose(thr[1:], sk_thr[1:])


def test_auc_of_a_known_separation_is_the_normal_formula():
    """N(1.5, 1) vs N(0, 1): AUC = Φ(1.5/√2) = 0.8556; 4,000 per group puts it within ±0.015."""
    from math import erf, sqrt

    m, n = synthetic(4000, 4000, 1.5, seed=0)
    expected = 0.5 * (1 + erf(1.5 / sqrt(2) / sqrt(2)))
    assert roc.roc_auc(m, n) == pytest.approx(expected, abs=0.015)
    assert roc.roc_auc(n, m) == pytest.approx(1 - roc.roc_auc(m, n))


@pytest.mark.parametrize("n_m,n_n,shift,decimals", [(15, 5, 1.0, None), (15, 5, 1.0, 0), (200, 300, 2.0, None),
                                                     (500, 1000, 2.5, None), (100, 150, 1.0, 1), (20, 400, 3.0, 0)])
def test_tpr_at_1pct_fpr_equals_ml_privacy_meter(n_m, n_n, shift, decimals):
    for seed in range(5):
        m, n = synthetic(n_m, n_n, shift, seed, decimals)
        fpr, tpr, _ = roc.roc_curve(m, n)
        ours = roc.tpr_at_fpr(fpr, tpr, 0.01)
        assert ours == ml_privacy_meter_tpr_at_1pct(m, n, drop_intermediate=False)  # the rule, on the full curve
        if decimals is None:  # no ties: sklearn's default curve drops nothing that matters here
            assert ours == ml_privacy_meter_tpr_at_1pct(m, n)  # ml_privacy_meter's exact code path


def test_tpr_at_1pct_fpr_with_few_nonmembers_is_tpr_at_zero_false_positives():
    m = np.array([5.0, 4.0, 3.0, 0.5, -1.0])
    n = np.array([3.5, 0.0, -0.5, -2.0, -3.0])  # 5 non-members: FPR steps of 0.2
    fpr, tpr, _ = roc.roc_curve(m, n)
    assert roc.tpr_at_fpr(fpr, tpr) == pytest.approx(2 / 5) == ml_privacy_meter_tpr_at_1pct(m, n)
    assert "FPR = 0" in roc.granularity_notes(5, 5)["tpr_at_1pct_fpr"]


def test_tpr_at_1pct_fpr_reads_the_full_curve_where_sklearn_drops_a_tied_point():
    """200 non-members (FPR steps of 0.005): tie groups of one member + one non-member make collinear
    points; sklearn's default curve drops the one at FPR = 0.01 and ml_privacy_meter's code then reads
    the point at FPR = 0, while the best threshold at FPR ≤ 1% has TPR = 3/10 (documented in roc.py)."""
    m = np.array([10.0, 9.0, 8.0, 7.0] + [-5.0] * 6)
    n = np.r_[[9.0, 8.0, 7.0], np.linspace(-10, -6, 197)]
    fpr, tpr, _ = roc.roc_curve(m, n)
    assert roc.tpr_at_fpr(fpr, tpr) == pytest.approx(0.3) == ml_privacy_meter_tpr_at_1pct(m, n, False)
    assert ml_privacy_meter_tpr_at_1pct(m, n) == pytest.approx(0.1)


@pytest.mark.parametrize("shift,decimals", [(1.0, None), (1.0, 0), (-1.0, None), (0.0, 1)])
def test_advantage_is_the_signed_max_of_tpr_minus_fpr_of_sklearn(shift, decimals):
    """Yeom et al.'s advantage is the attacker's gain, max(TPR − FPR) (≥ 0), not the two-sided KS statistic."""
    for seed in range(5):
        m, n = synthetic(40, 30, shift, seed, decimals)
        fpr, tpr, _ = roc.roc_curve(m, n)
        sk_fpr, sk_tpr, _ = sk_roc_curve(np.r_[np.ones(40), np.zeros(30)], np.r_[m, n])
        assert roc.advantage(fpr, tpr) == pytest.approx(max(0.0, np.max(sk_tpr - sk_fpr)), abs=1e-12)


def test_auc_p_value_matches_the_exact_mann_whitney_test_and_reports_the_unexpected_direction():
    from scipy.stats import mannwhitneyu

    for seed, shift in ((0, 0.8), (1, 0.0), (2, -0.8)):
        m, n = synthetic(15, 30, shift, seed)
        test = roc.auc_test(m, n, n_permutations=20_000, seed=seed)
        exact = mannwhitneyu(m, n, method="exact").pvalue
        assert test.auc_p_value == pytest.approx(exact, abs=0.01), (shift, test.auc_p_value, exact)
    low = roc.auc_test(*synthetic(15, 30, -3.0, 0))
    assert low.direction == "members score lower" and low.auc_p_value < 0.001
    d = roc.roc_report(*synthetic(15, 30, 2.0, 0), n_resamples=100, n_permutations=2000).to_dict()
    assert 0 < d["auc"]["p_value"] < 0.01 and "null 95th percentile" in d["advantage"]["note"]
    assert d["tpr_at_1pct_fpr"]["value"] is None and d["tpr_at_1pct_fpr"]["n"] == [0, 0]
    with_many = roc.roc_report(*synthetic(15, 120, 1.0, 0), n_resamples=100, n_permutations=500).to_dict()
    assert with_many["tpr_at_1pct_fpr"]["value"] is not None  # ≥ 100 non-members: estimable


def test_report_resamples_members_and_nonmembers_separately_and_states_granularity():
    m, n = synthetic(15, 5, 1.0, seed=3)
    d = roc.roc_report(m, n, n_resamples=500).to_dict()
    for key in ("auc", "advantage"):
        assert d[key]["n"] == [15, 5]
        assert d[key]["ci_low"] <= d[key]["value"] <= d[key]["ci_high"]
    assert "1/75" in d["auc"]["note"]
    assert d["roc"]["fpr"][0] == 0.0 and d["roc"]["tpr"][-1] == 1.0
    perfect = roc.roc_report(m + 100, n, n_resamples=200)  # every resample separates perfectly
    assert (perfect.auc.value, perfect.auc.ci_low, perfect.auc.ci_high) == (1.0, 1.0, 1.0)


def test_ddim_step_is_exact_for_the_true_noise():
    """With the true ε, the deterministic DDIM step moves x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε to exactly
    √ᾱ_s x₀ + √(1−ᾱ_s) ε, in both directions (so SecMI's round trip has zero error)."""
    from diffusers import DDPMScheduler

    from workbench.metrics.membership import ddim_step

    a = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(3, 4, 8, 8, generator=g,
                                                                                       dtype=torch.float64)
    for t, s in ((0, 10), (100, 110), (110, 100), (500, 20)):
        x_t = a[t].sqrt() * x0 + (1 - a[t]).sqrt() * eps
        expected = a[s].sqrt() * x0 + (1 - a[s]).sqrt() * eps
        torch.testing.assert_close(ddim_step(x_t, eps, float(a[t]), float(a[s])), expected)


# ---------------------------------------------------------------------------------------------------
# (b, c) A small real diffusers model: untouched, and over-fitted to ten photos by the DreamBooth recipe


def lfw_crops(folder: Path, numbers) -> list[Path]:
    """RES×RES crops of demo photos: the centre 150 px of the 250 px deep-funneled LFW image."""
    out = []
    for k in numbers:
        with Image.open(DEMO / PERSON / f"{PERSON}_{k:04d}.jpg") as im:
            crop = im.convert("RGB").crop((50, 50, 200, 200)).resize((RES, RES), Image.Resampling.BICUBIC)
        crop.save(folder / f"{k:02d}.png")
        out.append(folder / f"{k:02d}.png")
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """Members and non-members: a seeded random 10/10 split of the person's 20 demo photos, so the two
    groups differ only by chance (photos 1-10 vs 11-20 are not exchangeable: even a random-init
    model's loss tells them apart, AUC 0.13 — see the report)."""
    if not DEMO.is_dir():
        pytest.skip(f"no LFW demo photos at {DEMO}")
    order = np.random.default_rng(0).permutation(np.arange(1, 21))
    folder = tmp_path_factory.mktemp("crops")
    return lfw_crops(folder, sorted(order[:10])), lfw_crops(folder, sorted(order[10:]))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, photos, one_thread) -> Path:
    folder = tmp_path_factory.mktemp("small-sd")
    build_small_pipeline(folder, photos[0] + photos[1])
    return folder / "pipeline"


@pytest.fixture(scope="module")
def overfitted(tmp_path_factory, base_dir, photos, one_thread) -> Path:
    """The DreamBooth recipe (engine path) trains the whole UNet on the ten member photos until it
    over-fits: no prior preservation, batch = all ten photos, lr 1e-3."""
    from workbench.recipes import engine, registry

    root = tmp_path_factory.mktemp("overfit")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_HOME", str(root / "home"))
    try:
        recipe = registry.get_recipe("dreambooth")
        params = recipe.params(steps=OVERFIT_STEPS, lr=1e-3, batch_size=10, prior_preservation=False)
        job = engine.TrainJob(base=str(base_dir), train_images=photos[0], subject_id="mia-test",
                              out_dir=root / "run", device="cpu", resolution=RES, checkpoint_every=0)
        result = recipe.train(job, params)
    finally:
        mp.undo()
    return result.artifact_dir


def summary(report: dict) -> str:
    return json.dumps({k: {"auc": [v["auc"][x] for x in ("value", "ci_low", "ci_high")],
                           "tpr@1%fpr": v["tpr_at_1pct_fpr"]["value"], "queries": v["queries_per_image"]}
                       for k, v in report.items()})


@needs_lfw
def test_overfitted_model_is_caught_by_the_loss_attack(overfitted, photos, one_thread):
    from workbench.recipes.artifacts import load_personalised

    pipe = load_personalised(None, overfitted, "cpu")
    members, nonmembers = photos
    report = membership_inference(pipe, members, nonmembers, PROMPT, seed=0, n_resamples=1000)
    print("over-fitted:", summary(report))
    assert report["loss"]["auc"]["value"] >= 0.9
    for name, r in report.items():
        q = ATTACKS[name].params().queries()
        assert r["queries_per_image"] == q and r["total_queries"] == q * 20
        assert r["space"] == "latent" and "posterior mean" in r["space_detail"]
        assert len(r["scores"]["members"]) == 10 and len(r["scores"]["nonmembers"]) == 10
        assert r["auc"]["n"] == [10, 10] and "1/100" in r["auc"]["note"]
    assert [report[a]["queries_per_image"] for a in ("loss", "pia", "secmi")] == [16, 2, 12]


@needs_lfw
def test_untouched_base_has_no_membership_signal(base_dir, photos, one_thread):
    from workbench.backbones.registry import load_backbone

    pipe = load_backbone(str(base_dir), "cpu")
    report = membership_inference(pipe, *photos, PROMPT, seed=0, n_resamples=1000)
    print("untouched base:", summary(report))
    for name, r in report.items():
        assert r["auc"]["ci_low"] <= 0.5 <= r["auc"]["ci_high"], name


@needs_lfw
def test_scores_are_seeded_and_do_not_depend_on_the_other_images(base_dir, photos, one_thread):
    from workbench.backbones.registry import load_backbone

    pipe = load_backbone(str(base_dir), "cpu")
    members, nonmembers = photos
    both = membership_inference(pipe, members, nonmembers, PROMPT, attacks=("loss",), seed=1, n_resamples=0)
    again = membership_inference(pipe, members[:4], nonmembers[:3], PROMPT, attacks=("loss",), seed=1,
                                 n_resamples=0, batch_size=2)
    np.testing.assert_allclose(again["loss"]["scores"]["members"], both["loss"]["scores"]["members"][:4], rtol=2e-2)
    np.testing.assert_allclose(again["loss"]["scores"]["nonmembers"], both["loss"]["scores"]["nonmembers"][:3],
                               rtol=2e-2)


@needs_lfw
def test_bad_requests_fail_before_any_query(base_dir, photos):
    from workbench.backbones.registry import load_backbone

    pipe = load_backbone(str(base_dir), "cpu")
    members, nonmembers = photos
    with pytest.raises(UserError, match="unknown attack"):
        membership_inference(pipe, members, nonmembers, PROMPT, attacks=("lira",))
    with pytest.raises(UserError, match="no parameter"):
        membership_inference(pipe, members, nonmembers, PROMPT, attacks=("pia",), params={"pia": {"t_sec": 5}})
    with pytest.raises(UserError, match="instance prompt"):
        membership_inference(pipe, members, nonmembers, None, attacks=("pia",))
    with pytest.raises(UserError, match="both members and non-members"):
        membership_inference(pipe, members, members[:2], PROMPT, attacks=("pia",))


def test_pixel_space_unconditional_pipeline_is_attacked_in_pixels(tmp_path, one_thread):
    """A pipeline without a VAE (diffusers DDPMPipeline, UNet2DModel) is attacked on its pixels."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    report = membership_inference(pipe, paths[:3], paths[3:], None, n_resamples=100)
    assert {r["space"] for r in report.values()} == {"pixel"}
    assert all(np.isfinite(r["scores"]["members"]).all() for r in report.values())


@needs_lfw
def test_mia_command_attacks_a_lora_artifact_against_its_subject(tmp_path, monkeypatch, capsys, one_thread):
    """`workbench mia` end to end: demo intake (photos 1-15 train, 16-20 holdout, minus any photo intake
    rejects), a LoRA trained on the train split,
    the PIA attack on it and on the untouched base (--with-base)."""
    import argparse

    from workbench.backbones.tiny_face import build_pipeline
    from workbench.cli import main
    from workbench.metrics import mia_commands
    from workbench.recipes import engine, registry
    from workbench.subjects.store import load_subject

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    assert main(["intake", "--demo", PERSON, "--subject", "s1", "--json"]) == 0
    subject = load_subject("s1")
    n_m, n_n = len(subject.train), len(subject.holdout)
    assert n_m >= 10 and n_n >= 4
    build_pipeline(tmp_path / "tiny", seed=0)
    recipe = registry.get_recipe("lora")
    recipe.train(engine.TrainJob(base=str(tmp_path / "tiny"), train_images=subject.train, subject_id="s1",
                                 out_dir=tmp_path / "run", device="cpu", checkpoint_every=0),
                 recipe.params(steps=2, batch_size=2))
    capsys.readouterr()

    parser = argparse.ArgumentParser()
    mia_commands.add_commands(parser.add_subparsers())
    args = parser.parse_args(["mia", "--subject", "s1", "--recipe-dir", str(tmp_path / "run"), "--attack", "pia",
                              "--with-base", "--resamples", "200", "--device", "cpu", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompt"] == "a photo of sks person" and report["warning"] is None
    assert report["calibrated"] and report["attacks"]["pia"]["calibrated"]
    for key, queries in (("attacks", 4), ("base_control", 2)):  # calibration: 2 queries on the model, 2 on its base
        pia = report[key]["pia"]
        assert pia["auc"]["n"] == [n_m, n_n] and f"1/{n_m * n_n}" in pia["auc"]["note"]
        assert pia["queries_per_image"] == queries and pia["total_queries"] == queries * (n_m + n_n)
        assert pia["space"] == "latent" and pia["auc"]["p_value"] is not None
    table = mia_commands.summary_table(report)
    print(table)
    assert "tuned  pia" in table and "base   pia" in table

    args = parser.parse_args(["mia", "--subject", "other", "--recipe-dir", str(tmp_path / "run")])
    with pytest.raises(UserError, match="trained for subject 's1'"):
        args.func(args)
