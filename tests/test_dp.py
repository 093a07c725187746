"""DP-SGD in the ``dp_lora`` recipe: per-sample clipping equals a batch-of-one computation, the noise is
the stated Gaussian, and the reported ε is the accountant's (and, at q = 1, the closed form)."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.errors import SpecError, UserError  # noqa: E402
from workbench.recipes import dp_lora, engine, registry  # noqa: E402
from workbench.recipes.artifacts import load_personalised, read_done  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SUBJECT = "subject-dp"


@pytest.fixture(scope="module")
def lora_unet(random_base):
    """The random tiny-face UNet with LoRA adapters whose B matrices are non-zero (so A gets gradients)."""
    from workbench.backbones.registry import load_backbone

    pipe = load_backbone(str(random_base), "cpu")
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.requires_grad_(False)
    params = dp_lora.Params()
    trained = dp_lora.lora.add_lora(pipe.unet, params, params.target_modules)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in trained:
            p.normal_(0, 0.05)
    return pipe.unet, trained


def batch(unet, b: int = 5):
    g = torch.Generator().manual_seed(1)
    size = unet.config.sample_size
    z = torch.randn(b, unet.config.in_channels, size, size, generator=g)
    noise = torch.randn(z.shape, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    cond = torch.randn(b, 8, unet.config.cross_attention_dim, generator=g)
    return z, noise, t, cond


def per_sample_losses(model, z, noise, t, cond):
    return (model(z, t, cond).sample - noise).pow(2).flatten(1).mean(1)


def test_per_sample_clipping_matches_a_batch_of_one_loop(lora_unet):
    from opacus import GradSampleModule

    unet, trained = lora_unet
    z, noise, t, cond = batch(unet)
    # Reference: each sample alone, its own gradient, its own norm over all LoRA weights, clipped, summed.
    grads = []
    for i in range(len(z)):
        for p in trained:
            p.grad = None
        per_sample_losses(unet, z[i:i + 1], noise[i:i + 1], t[i:i + 1], cond[i:i + 1]).sum().backward()
        grads.append([p.grad.clone() for p in trained])
    norms = np.array([math.sqrt(sum(float(g.pow(2).sum()) for g in gs)) for gs in grads])
    clip = float(np.sort(norms)[2:4].mean())  # two of the five samples are clipped, three are not
    expected = 2.5
    want = [sum(min(1.0, clip / n) * gs[k] for n, gs in zip(norms, grads, strict=True)) / expected
            for k in range(len(trained))]

    model = GradSampleModule(unet, batch_first=True, loss_reduction="sum", strict=False)
    try:
        for p in trained:
            p.grad = None
        per_sample_losses(model, z, noise, t, cond).sum().backward()
        got_norms = dp_lora.clip_and_noise(trained, clip, 0.0, expected, torch.Generator().manual_seed(0))
    finally:
        model.remove_hooks()
    assert np.allclose(got_norms, norms, rtol=1e-4)
    assert sum(n > clip for n in got_norms) == 2
    got = torch.cat([p.grad.flatten() for p in trained])
    want = torch.cat([w.flatten() for w in want])
    rel = ((got - want).norm() / want.norm()).item()  # batched vs one-at-a-time float rounding only
    assert rel < 1e-4, rel  # (a wrong clipping factor on the two clipped samples: > 1e-2)


def test_the_noise_is_gaussian_with_std_sigma_times_clip_over_the_expected_batch(lora_unet):
    _, trained = lora_unet
    sigma, clip, expected = 1.3, 0.01, 4.0
    for p in trained:
        p.grad_sample = None  # an empty Poisson batch: the update is noise only
    dp_lora.clip_and_noise(trained, clip, sigma, expected, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    want = torch.cat([torch.randn(p.shape, generator=g).flatten() for p in trained]) * sigma * clip / expected
    got = torch.cat([p.grad.flatten() for p in trained])
    assert torch.allclose(got, want, rtol=1e-6, atol=0)  # the same draws, scaled as stated
    assert got.std().item() == pytest.approx(sigma * clip / expected, rel=0.02)


def test_epsilon_is_the_accountants_and_at_full_batch_the_closed_form():
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(1.1, 0.25, 300)]
    direct = accountant.get_epsilon(delta=1e-5, alphas=dp_lora.ALPHAS)
    assert dp_lora.epsilon(1.1, 0.25, 300, 1e-5) == pytest.approx(direct, rel=1e-12)
    assert direct <= accountant.get_epsilon(delta=1e-5)  # more orders: never a looser bound than the default
    # q = 1: the Gaussian mechanism composed T times has RDP T·α/(2σ²) (Mironov 2017, Prop. 7 and 1);
    # converted with Balle et al. 2020, Thm 21: ε = min_α RDP(α) + log((α-1)/α) - (log δ + log α)/(α-1).
    sigma, steps, delta = 5.0, 50, 1e-5
    alphas = np.array(dp_lora.ALPHAS)
    closed = np.min(steps * alphas / (2 * sigma**2) + np.log((alphas - 1) / alphas)
                    - (np.log(delta) + np.log(alphas)) / (alphas - 1))
    assert dp_lora.epsilon(sigma, 1.0, steps, delta) == pytest.approx(closed, rel=1e-9)
    # more steps or less noise: more ε; no noise: no guarantee
    assert dp_lora.epsilon(1.1, 0.25, 600, 1e-5) > dp_lora.epsilon(1.1, 0.25, 300, 1e-5)
    assert dp_lora.epsilon(0.8, 0.25, 300, 1e-5) > dp_lora.epsilon(1.1, 0.25, 300, 1e-5)
    assert math.isinf(dp_lora.epsilon(0.0, 0.25, 300, 1e-5))


def test_a_target_epsilon_gives_the_smallest_noise_that_meets_it():
    params = dp_lora.Params(target_epsilon=4.0)
    sigma = dp_lora.noise_for(params, 0.25, 200)
    eps = dp_lora.epsilon(sigma, 0.25, 200, params.delta)
    assert 4.0 - 0.02 <= eps <= 4.0
    assert dp_lora.epsilon(sigma * 0.97, 0.25, 200, params.delta) > 4.0
    with pytest.raises(UserError, match="out of reach"):
        dp_lora.noise_for(dp_lora.Params(target_epsilon=1e-6), 1.0, 10_000)


def dp_job(random_base, crops, out, **kw) -> engine.TrainJob:
    return engine.TrainJob(base=str(random_base), train_images=crops, subject_id=SUBJECT, out_dir=out, device="cpu",
                           checkpoint_every=0, **kw)


def test_dp_lora_records_the_accountants_epsilon_for_the_steps_it_ran(random_base, crops, tmp_path, home,
                                                                      monkeypatch):
    from opacus import GradSampleModule

    closed = []
    real_remove = GradSampleModule.remove_hooks
    monkeypatch.setattr(GradSampleModule, "remove_hooks", lambda self: (closed.append(1), real_remove(self))[1])
    recipe = registry.get_recipe("dp_lora")
    # 24 steps capped at 1.5 per photo: 6 steps, and sigma is set so that those 6 meet the target
    params = recipe.params(steps=24, batch_size=2, target_epsilon=20.0, max_grad_norm=0.01, max_steps_per_photo=1.5)
    result = recipe.train(dp_job(random_base, crops, tmp_path / "run"), params)
    privacy = read_done(result.artifact_dir)["details"]["privacy"]
    q = 2 / len(crops)
    assert privacy["sample_rate"] == pytest.approx(q) and privacy["steps"] == result.steps == 6
    assert privacy["epsilon"] == pytest.approx(dp_lora.epsilon(privacy["noise_multiplier"], q, 6, 1e-5), abs=1e-4)
    assert 20.0 - 0.02 <= privacy["epsilon"] <= 20.0
    assert privacy["unit"] == "one training photo" and "identity" in privacy["does_not_protect"]
    assert "not recorded" in privacy["noise_seed"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all("clipped" in r and "batch" in r for r in rows)
    assert closed == [1], "Opacus' hooks are removed from the trained UNet before it is saved"
    load_personalised(str(random_base), result.artifact_dir, "cpu")


def test_a_run_stopped_early_reports_the_epsilon_of_the_steps_it_ran(random_base, crops, tmp_path, home):
    recipe = registry.get_recipe("dp_lora")
    params = recipe.params(steps=12, batch_size=2, target_epsilon=10.0, lr=0.5, seeded_noise=True,
                           early_stopping_patience=1, eval_every=1)
    job = dp_job(random_base, crops[:2], tmp_path / "run", holdout_images=crops[2:])
    result = recipe.train(job, params)
    details = read_done(result.artifact_dir)["details"]
    privacy, early = details["privacy"], details["early_stopping"]
    assert early["stopped_early"] and privacy["steps"] == result.steps == early["stopped_at"] < 12, early
    assert privacy["epsilon"] == pytest.approx(dp_lora.epsilon(privacy["noise_multiplier"], 1.0, result.steps, 1e-5),
                                               abs=1e-4)
    assert privacy["epsilon"] < 10.0 - 0.5  # sigma was set for 12 steps; fewer ran, so less privacy was spent


def test_the_noise_is_not_derived_from_the_job_seed_unless_asked(random_base, crops, tmp_path, home):
    recipe = registry.get_recipe("dp_lora")

    def run(name, **kw):
        params = recipe.params(steps=2, batch_size=2, noise_multiplier=1.0, **kw)
        return recipe.train(dp_job(random_base, crops, tmp_path / name), params).param_hash

    assert run("a") != run("b"), "two runs with the same job seed must draw different noise"
    assert run("c", seeded_noise=True) == run("d", seeded_noise=True)


def test_a_weight_without_per_sample_gradients_is_refused():
    import torch.nn as nn

    w = nn.Parameter(torch.zeros(3))
    w.grad_sample = torch.zeros(2, 3)
    dp_lora.check_per_sample([w], ["ok"], 2)
    w.grad_sample = None
    with pytest.raises(RuntimeError, match="no per-sample gradient for unet.x"):
        dp_lora.check_per_sample([w], ["unet.x"], 2)


@pytest.mark.parametrize("bad, field", [
    ({"target_epsilon": 8.0, "noise_multiplier": 1.0}, "exactly one of target_epsilon"),
    ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"train_text_encoder": True}, "train_text_encoder"),
    ({"prior_preservation": True}, "prior_preservation"),
    ({"delta": 1.5}, "delta"),
])
def test_bad_dp_parameters_fail_in_the_spec_naming_the_field(bad, field):
    from workbench.spec import parse_spec

    data = {"version": 1, "name": "dp", "subject": {"demo": "Colin_Powell"},
            "recipes": [{"name": "none"}, {"name": "dp_lora", "params": bad}]}
    with pytest.raises(SpecError, match=r"recipes\[1\]\.params") as err:
        parse_spec(data)
    assert field in str(err.value)


def test_delta_must_be_below_one_over_the_number_of_photos(random_base, crops, tmp_path, home):
    recipe = registry.get_recipe("dp_lora")
    job = engine.TrainJob(base=str(random_base), train_images=crops, subject_id=SUBJECT, out_dir=tmp_path / "run",
                          device="cpu")
    with pytest.raises(UserError, match="1/N"):
        recipe.train(job, recipe.params(steps=2, delta=0.3))
