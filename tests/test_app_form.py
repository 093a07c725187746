"""The app's pure parts: identity, the Recipes form and its spec, the W&B note (no server needed)."""

from __future__ import annotations

import pytest
import yaml

pytest.importorskip("gradio")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("WORKBENCH_APP_SECRET", raising=False)
    return tmp_path / "h"


class Req:  # the two attributes identify() reads from a gr.Request
    def __init__(self, username=None, session_hash="s1"):
        self.username, self.session_hash = username, session_hash


def test_identity_is_a_keyed_hash_of_the_login_never_the_name(home):
    import gradio as gr

    from workbench.app.identity import identify, secret_path

    user = identify(Req(username="ana"))
    assert user.logged_in and user.subject_id.startswith("app-u-") and "ana" not in user.subject_id
    assert identify(Req(username="ana", session_hash="other")) == user  # a reload: same subject
    anon = identify(Req())
    assert not anon.logged_in and anon.subject_id.startswith("app-s-")
    assert identify(Req(session_hash="s2")).subject_id != anon.subject_id
    hf = identify(Req(session_hash="s3"), gr.OAuthProfile({"name": "Ana", "preferred_username": "ana",
                                                            "profile": "", "picture": ""}))
    assert hf.logged_in and hf.how == "Hugging Face login" and hf.subject_id != user.subject_id
    assert (secret_path().stat().st_mode & 0o777) == 0o600
    secret_path().unlink()  # a new secret: nobody's id can be derived from the old one
    assert identify(Req(username="ana")).subject_id != user.subject_id


def test_recipe_choices_and_parameter_defaults_come_from_the_registry():
    from workbench.app import form
    from workbench.recipes.registry import load_all

    names = [n for n in load_all() if n != "none"]
    assert form.recipe_choices() == names
    text = form.params_text(names)
    data = yaml.safe_load(text)
    assert list(data) == names
    for name in names:
        assert data[name] == load_all()[name].params().model_dump(mode="json")
    edited = yaml.safe_dump({names[0]: data[names[0]] | {"steps": 7}, names[1]: data[names[1]]})
    kept = yaml.safe_load(form.params_text(names[:1], edited))
    assert list(kept) == names[:1] and kept[names[0]]["steps"] == 7  # edits kept for a recipe still ticked
    assert form.params_text(names, "lora: [unclosed") == "lora: [unclosed"  # left alone, the run reports it


def test_the_form_becomes_a_validated_spec_and_errors_name_the_field():
    from workbench.app import form
    from workbench.errors import SpecError
    from workbench.metrics.registry import encoders
    from workbench.spec import WITH_IDENTIFIER

    values = form.RecipeForm(recipes=["lora"], params_text='{"lora": {"steps": 3, "rank": 2}}')
    spec = form.build_spec({"demo": "Naomi_Watts", "id": "app-s-0123"}, values, 7)
    assert [r.name for r in spec.recipes] == ["none", "lora"]
    assert spec.recipes[1].params["rank"] == 2 and spec.recipes[1].params["steps"] == 3
    assert spec.prompts.with_identifier == list(WITH_IDENTIFIER)  # empty prompt boxes: the spec's defaults
    assert spec.metrics.encoders == ["sface"] and "sface" in encoders() and spec.retention.default_days == 7
    bad = form.RecipeForm(recipes=["lora"], params_text="lora:\n  rank: eight\n", encoders=())
    with pytest.raises(SpecError) as err:
        form.build_spec({"demo": "Naomi_Watts", "id": "app-s-0123"}, bad, 7)
    assert "recipes[1] (lora).params.rank: Input should be a valid integer" in str(err.value)
    assert "metrics.encoders" in str(err.value)
    with pytest.raises(SpecError, match="not valid YAML or JSON at line 1"):
        form.parse_params("lora: {rank: [")


def test_protected_or_both_training_photos_add_entries_and_the_subjects_protection():
    from workbench.app import form
    from workbench.errors import SpecError

    subject = {"demo": "Naomi_Watts", "id": "app-s-0123"}
    both = form.RecipeForm(recipes=["lora", "dp_lora"], params_text="", photos="both", protect_epsilon=0.03,
                           protect_rounds=2)
    spec = form.build_spec(subject, both, 7)
    assert [(r.label, r.photos) for r in spec.recipes] == [
        ("none", "clean"), ("lora", "clean"), ("lora-protected", "protected"),
        ("dp_lora", "clean"), ("dp_lora-protected", "protected")]
    assert (spec.subject.protection.method, spec.subject.protection.epsilon, spec.subject.protection.rounds) == (
        "aspl", 0.03, 2)
    assert form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text=""), 7).subject.protection is None
    with pytest.raises(SpecError, match="subject.protection.epsilon"):
        form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text="", photos="protected",
                                                 protect_epsilon=0.001), 7)


def test_local_backbone_folders_are_refused_on_a_shared_space(monkeypatch):
    from workbench.app import form
    from workbench.errors import SpecError

    assert form.check_backbone("/models/sd15") == "/models/sd15"
    monkeypatch.setenv("SYSTEM", "spaces")
    with pytest.raises(SpecError, match="local folders are not allowed"):
        form.check_backbone("/models/sd15")
    assert form.check_backbone("tiny-face") == "tiny-face"


def test_wandb_note_links_an_online_run_and_says_an_offline_one_stays_on_the_server(home):
    from workbench.app.callbacks import wandb_note

    online = wandb_note({"mode": "online", "url": "https://wandb.ai/me/p/runs/abc", "project": "p"})
    assert "(https://wandb.ai/me/p/runs/abc)" in online
    offline = wandb_note({"mode": "offline", "offline_run": str(home / "wandb" / "wandb" / "offline-run-x")})
    assert "offline-run-x" in offline and "stays on the server" in offline
    assert str(home) not in offline and "$WORKBENCH_HOME" not in offline and "wandb sync" not in offline
    assert "tracking was off" in wandb_note({"mode": "off"})
    missing = wandb_note({"mode": "missing"})
    assert "no mirror was written" in missing and "WANDB_MODE" not in missing


def test_run_on_ray_goes_into_the_spec_with_the_configured_cluster(monkeypatch):
    from workbench.app import form

    subject = {"demo": "Naomi_Watts", "id": "app-s-0123"}
    monkeypatch.delenv("WORKBENCH_RAY_ADDRESS", raising=False)
    local = form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text=""), 7)
    assert local.execution.executor == "local" and local.execution.address is None
    ray = form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text="", executor="ray"), 7)
    assert ray.execution.executor == "ray" and ray.execution.address is None  # a local Ray on loopback
    monkeypatch.setenv("WORKBENCH_RAY_ADDRESS", "10.0.0.5:6379")
    ray = form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text="", executor="ray"), 7)
    assert ray.execution.address == "10.0.0.5:6379"
    assert form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text=""), 7).execution.address is None
    with pytest.raises(Exception, match="execution"):
        form.build_spec(subject, form.RecipeForm(recipes=["lora"], params_text="", executor="dask"), 7)
