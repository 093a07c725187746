"""Membership evidence that can carry a decision (METRICS.md "Splits", "Membership inference"; issue #12),
tested on a real LFW person outside the demo list:

- random splits of one person's photos, scored by the *untouched* tiny-face base: the raw AUC's
  permutation p-value falls below 0.05 in at most 3 of 20 splits (it is uniform under a random split);
- a small model over-fitted to 15 of the person's photos: the difficulty-calibrated AUC (score on the
  model minus score on its base, same noise) is ≥ 0.95 with p < 0.001 for at least one attack, and the
  base scored against itself is exactly chance (calibrated scores are all 0).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from metrics_helpers import LFW, build_small_pipeline  # noqa: E402

from workbench.metrics import roc  # noqa: E402
from workbench.metrics.membership import attack_scores, membership_inference  # noqa: E402
from workbench.subjects.demo import DEMO_PEOPLE  # noqa: E402
from workbench.subjects.split import draw_split  # noqa: E402

PERSON = "Luiz_Inacio_Lula_da_Silva"  # 48 LFW photos; not a demo subject, not in tiny-face's pretraining
PROMPT = "a photo of sks person"
SPLITS = 200  # random splits of one person's photos (the attack scores are computed once)
needs_person = pytest.mark.skipif(not (LFW / "people" / PERSON).is_dir(), reason=f"no LFW photos of {PERSON}")


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> dict[str, Path]:
    """The person's photos through the real intake (64 px aligned crops), by content hash."""
    from workbench.subjects.intake import intake
    from workbench.subjects.store import SubjectStore

    assert PERSON not in DEMO_PEOPLE
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_HOME", str(tmp_path_factory.mktemp("home")))
    try:
        intake(sorted((LFW / "people" / PERSON).glob("*.jpg")), "evidence", resolution=64)
        store = SubjectStore("evidence")
        return {e["sha256"]: (store.root / e["crop"]).resolve() for e in store.read_record()["accepted"]}
    finally:
        mp.undo()


@needs_person
def test_random_splits_scored_by_the_untouched_base_give_calibrated_p_values(crops, one_thread):
    """Under a random split the permutation p-value is uniform: over many splits about 5% fall below 0.05.
    The scores are fixed per photo, so the p-values of independent splits are independent uniforms and the
    20-split version of this check (at most 3 of 20 below 0.05) fails by chance with probability 1.6% per
    attack (binomial, 20 x 5%). On this person, chosen before looking, splits 0-19 give 4 of 20 for the loss
    attack (p = 0.003, 0.019, 0.032, 0.043 at 10,000 permutations; loss_t 3, SecMI 2, PIA 0), so the test
    bounds the rate itself over 200 splits instead (3 standard errors above 5%; loss 6.0%, PIA 3.0%)."""
    from workbench.backbones.registry import load_backbone

    digests = sorted(crops)
    assert len(digests) >= 40
    base = load_backbone("tiny-face", "cpu")
    scores = attack_scores(base, [crops[d] for d in digests], PROMPT, ["loss", "pia"], seed=0)
    where = {d: i for i, d in enumerate(digests)}
    for attack, s in scores.items():
        p_values = []
        for seed in range(SPLITS):
            split = draw_split(digests, members=15, seed=seed)
            m = s[[where[d] for d in split.members]]
            n = s[[where[d] for d in split.non_members]]
            p_values.append(roc.auc_test(m, n, n_permutations=500, seed=seed).auc_p_value)
        p_values = np.array(p_values)
        print(attack, "share below 0.05:", (p_values < 0.05).mean(), "first 20 splits:", (p_values[:20] < 0.05).sum())
        assert (p_values < 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / SPLITS), (attack, p_values)
        assert 0.35 <= np.median(p_values) <= 0.65  # uniform, not a test that never rejects


@pytest.fixture(scope="module")
def overfitted(tmp_path_factory, crops, one_thread):
    """A small random-init pipeline (32 px) as the base, and the DreamBooth recipe over-fitting its whole
    UNet to 15 members drawn at random from the person's photos."""
    from workbench.recipes import engine, registry

    root = tmp_path_factory.mktemp("overfit")
    split = draw_split(sorted(crops), members=15, seed=0)
    members, nonmembers = [crops[d] for d in split.members], [crops[d] for d in split.non_members]
    build_small_pipeline(root, members + nonmembers)
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_HOME", str(root / "home"))
    try:
        recipe = registry.get_recipe("dreambooth")
        params = recipe.params(steps=150, lr=1e-3, batch_size=15, prior_preservation=False)
        job = engine.TrainJob(base=str(root / "pipeline"), train_images=members, subject_id="evidence",
                              out_dir=root / "run", device="cpu", resolution=32, checkpoint_every=0)
        artifact = recipe.train(job, params).artifact_dir
    finally:
        mp.undo()
    return root / "pipeline", artifact, members, nonmembers


@needs_person
def test_an_overfitted_model_is_caught_by_calibrated_attacks_and_the_base_is_exactly_chance(overfitted):
    from workbench.backbones.registry import load_backbone
    from workbench.recipes.artifacts import load_personalised

    base_dir, artifact, members, nonmembers = overfitted
    attacks = ["loss", "loss_t", "pia"]
    base = load_backbone(str(base_dir), "cpu")
    reference = attack_scores(base, members + nonmembers, PROMPT, attacks, seed=0)
    control = membership_inference(base, members, nonmembers, PROMPT, attacks, seed=0, n_resamples=200,
                                   reference=reference)
    for name, r in control.items():  # the base against itself: calibrated scores are exactly 0
        assert r["calibrated"] and set(r["calibrated_scores"]["members"]) == {0.0}
        assert r["auc"]["value"] == 0.5 and r["auc"]["p_value"] == 1.0, name
    tuned = load_personalised(str(base_dir), artifact, "cpu")
    report = membership_inference(tuned, members, nonmembers, PROMPT, attacks, seed=0, n_resamples=200,
                                  reference=reference)
    print({k: (v["auc"]["value"], v["auc"]["p_value"], v["auc_raw"]["value"]) for k, v in report.items()})
    caught = [k for k, v in report.items() if v["auc"]["value"] >= 0.95 and v["auc"]["p_value"] < 0.001]
    assert caught, report
    for r in report.values():
        assert r["auc"]["n"] == [15, len(nonmembers)] and r["queries_per_image"] % 2 == 0
        assert r["tpr_at_1pct_fpr"]["value"] is None  # fewer than 100 non-members: not estimable, says why
        assert "100 non-members" in r["tpr_at_1pct_fpr"]["note"]
