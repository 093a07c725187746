"""The experiment spec: shipped specs load, and every kind of mistake names its field path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from workbench import spec as spec_module
from workbench.errors import SpecError, UserError
from workbench.recipes import registry
from workbench.spec import load_spec, parse_spec

EXPERIMENTS = sorted((Path(__file__).resolve().parent.parent / "experiments").glob("*.yaml"))

MINIMAL = {
    "version": 1,
    "name": "unit",
    "subject": {"demo": "Colin_Powell"},
    "recipes": [{"name": "none"}, {"name": "toy", "params": {"rank": 8}}],
}


class ToyParams(registry.RecipeParams):
    rank: int = Field(4, ge=1)  # a recipe parameter whose type the spec must check
    steps: int = 10


@pytest.fixture(autouse=True)
def toy_recipe(monkeypatch):
    """A test-only recipe next to the real ones, so params checks do not depend on their fields."""
    registry.load_all()
    toy = registry.Recipe("toy", ToyParams, lambda job, params: None, "test-only recipe")
    monkeypatch.setitem(registry.RECIPES, "toy", toy)


def spec_with(**changes) -> dict:
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


def problems_of(data) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return str(info.value)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_spec_loads_and_round_trips(path):
    spec = load_spec(path)
    assert any(r.name == "none" for r in spec.recipes)
    resolved = spec.resolved()
    json.dumps(resolved)  # JSON-serialisable, for run folders
    assert parse_spec(resolved).resolved() == resolved
    for entry in spec.recipes:
        entry.typed_params()  # the recipe's own Params model accepts the defaulted params


def test_shipped_specs_exist():
    names = {p.name for p in EXPERIMENTS}
    assert {"quickstart.yaml", "sd15_recipes.yaml", "privacy_recipes.yaml", "privacy_recipes_sd15.yaml"} <= names


def test_minimal_spec_fills_every_default():
    spec = parse_spec(MINIMAL)
    assert spec.backbone == "tiny-face"
    assert spec.seeds == [0] and spec.images_per_prompt == 2
    assert (spec.sampling.steps, spec.sampling.guidance_scale, spec.sampling.batch_size) == (25, 5.0, 8)
    assert spec.metrics.encoders == ["sface"] and spec.metrics.mia_attacks == ["loss", "loss_t", "pia", "secmi"]
    assert spec.tracking.wandb == "offline" and spec.tracking.log_images is False
    assert spec.subject.members is None and spec.subject.holdout_fraction is None and spec.subject.split_seed == 0
    assert spec.subject.resolution is None
    assert spec.recipes[1].label == "toy"
    assert spec.recipes[1].params == {"rank": 8, "steps": 10}  # defaulted by the recipe's Params
    assert spec.retention.days_for("upload") == 30


def test_demo_subject_id_is_a_hash_not_the_name():
    spec = parse_spec(MINIMAL)
    assert spec.subject.id.startswith("demo-")
    assert "colin" not in spec.subject.id.lower() and "powell" not in spec.subject.id.lower()
    assert parse_spec(MINIMAL).subject.id == spec.subject.id  # stable


def test_wrong_key_names_the_key_and_the_allowed_ones():
    msg = problems_of(spec_with(tracking={"wandbb": "off"}))
    assert "tracking.wandbb: unknown key 'wandbb'" in msg
    assert "wandb, project, log_images" in msg


def test_wrong_top_level_key():
    msg = problems_of(spec_with(seed=[1]))
    assert "seed: unknown key 'seed'" in msg and "seeds" in msg


def test_wrong_type_names_the_path_and_the_value():
    msg = problems_of(spec_with(sampling={"steps": "many"}))
    assert "sampling.steps: Input should be a valid integer" in msg and "'many'" in msg


def test_wrong_type_in_recipe_params_names_the_path():
    data = spec_with()
    data["recipes"][1]["params"] = {"rank": "eight"}
    msg = problems_of(data)
    assert "recipes[1].params.rank: Input should be a valid integer" in msg and "got 'eight'" in msg


def test_unknown_recipe_param_lists_the_recipe_fields():
    data = spec_with()
    data["recipes"][1]["params"] = {"rnak": 8}
    msg = problems_of(data)
    assert "recipes[1].params.rnak: unknown key 'rnak'" in msg and "rank, steps" in msg


def test_unknown_recipe_lists_known_ones():
    msg = problems_of(spec_with(recipes=[{"name": "none"}, {"name": "lorra"}]))
    assert "recipes[1].name: unknown recipe 'lorra'; known recipes:" in msg
    assert "none" in msg.split("known recipes:")[1] and "toy" in msg.split("known recipes:")[1]


def test_missing_none_control_says_how_to_add_it():
    msg = problems_of(spec_with(recipes=[{"name": "toy"}]))
    assert "recipes:" in msg and "- name: none" in msg


def test_duplicate_labels_are_refused():
    msg = problems_of(spec_with(recipes=[{"name": "none"}, {"name": "toy"}, {"name": "toy"}]))
    assert "recipes: recipes[2] has label 'toy'" in msg
    recipes = [{"name": "none"}, {"name": "toy"}, {"name": "toy", "label": "toy-r16"}]
    ok = parse_spec(spec_with(recipes=recipes))
    assert [r.label for r in ok.recipes] == ["none", "toy", "toy-r16"]


def test_a_sweep_expands_into_one_labelled_entry_per_combination():
    spec = parse_spec(spec_with(recipes=[{"name": "none"}, {"name": "toy", "params": {"steps": 3},
                                                           "sweep": {"rank": [2, 8], "steps": [5]}}]))
    assert [(r.label, r.params) for r in spec.recipes[1:]] == [
        ("toy-rank-2-steps-5", {"rank": 2, "steps": 5}), ("toy-rank-8-steps-5", {"rank": 8, "steps": 5})]
    again = parse_spec(spec.resolved())  # the resolved spec lists the expanded entries: it reruns alike
    assert [(r.label, r.params, r.sweep) for r in again.recipes] == [(r.label, r.params, {}) for r in spec.recipes]


def test_a_bad_swept_value_names_the_sweep_field_and_clashing_labels_are_refused():
    msg = problems_of(spec_with(recipes=[{"name": "none"}, {"name": "toy", "sweep": {"rank": [2, "x", 0]}}]))
    assert "recipes[1].sweep.rank: Input should be a valid integer" in msg and "got 'x'" in msg
    assert "recipes[1].sweep.rank: Input should be greater than or equal to 1" in msg
    clash = [{"name": "none"}, {"name": "toy", "sweep": {"rank": [2]}}, {"name": "toy", "label": "toy-rank-2"}]
    assert "recipes[2]: label 'toy-rank-2' is already used by recipes[1]" in problems_of(spec_with(recipes=clash))
    long = [{"name": "none"}, {"name": "toy", "label": "x" * 60, "sweep": {"rank": [2]}}]
    assert "recipes[1].sweep: the generated label" in problems_of(spec_with(recipes=long))


def test_protected_photos_need_a_protection_and_get_their_own_label():
    msg = problems_of(spec_with(recipes=[{"name": "none"}, {"name": "toy", "photos": "protected"}]))
    assert "recipes[1].photos: 'protected' needs subject.protection" in msg
    spec = parse_spec(spec_with(subject={"demo": "Colin_Powell", "protection": {"method": "fsmg"}},
                                recipes=[{"name": "none"}, {"name": "toy", "photos": "protected"}]))
    assert spec.recipes[1].label == "toy-protected" and spec.subject.protection.epsilon == 0.05
    msg = problems_of(spec_with(subject={"demo": "Colin_Powell", "protection": {"epsilon": 3}},
                                recipes=[{"name": "none"}]))
    assert "subject.protection.epsilon: Input should be less than or equal to 1" in msg


def test_bad_subject_id_is_refused():
    msg = problems_of(spec_with(subject={"demo": "Colin_Powell", "id": "../../etc"}))
    assert "subject.id: subject id '../../etc' is not allowed" in msg


def test_subject_needs_exactly_one_source():
    assert "subject: give exactly one of" in problems_of(spec_with(subject={"id": "s1"}))
    both = {"demo": "Colin_Powell", "photos": ["a.jpg"]}
    assert "subject: give exactly one of" in problems_of(spec_with(subject=both))


def test_template_without_identifier_is_refused():
    prompts = {"with_identifier": ["a photo of {identifier} {class_noun}", "a photo of a {class_noun}"]}
    msg = problems_of(spec_with(prompts=prompts))
    assert "prompts.with_identifier[1]: template 'a photo of a {class_noun}' must contain {identifier}" in msg


def test_concept_bleed_template_with_identifier_is_refused():
    msg = problems_of(spec_with(prompts={"without_identifier": ["a photo of {identifier}"]}))
    assert "prompts.without_identifier[0]:" in msg and "must not contain {identifier}" in msg


def test_template_with_unknown_placeholder_is_refused():
    msg = problems_of(spec_with(prompts={"with_identifier": ["{identifier} as {style}"]}))
    assert "prompts.with_identifier[0]:" in msg and "{style}" in msg


def test_every_problem_is_reported_at_once():
    data = spec_with(version=2, device="gpu", metrics={"encoders": ["arcfcae"]})
    data["recipes"][1]["params"] = {"rank": 0}
    msg = problems_of(data)
    assert "4 problems" in msg
    for path in ("version:", "device:", "metrics.encoders[0]:", "recipes[1].params.rank:"):
        assert f"\n  {path}" in msg


def test_retention_kinds_are_checked_against_manifest_kinds():
    msg = problems_of(spec_with(retention={"kinds": {"uploads": 7}}))
    assert "retention.kinds: unknown artifact kind 'uploads'" in msg
    spec = parse_spec(spec_with(retention={"default_days": 30, "kinds": {"upload": 7}}))
    assert spec.retention.days_for("upload") == 7 and spec.retention.days_for("weights") == 30


def test_spec_error_is_a_user_error():
    assert issubclass(SpecError, UserError)  # the CLI prints it as one line, exit 2


def test_prompt_suite_expands_templates_in_order():
    prompts = {
        "identifier": "zwx",
        "class_noun": "woman",
        "with_identifier": ["a photo of {identifier} {class_noun}", "{identifier} {class_noun}, studio"],
        "without_identifier": ["a photo of a {class_noun}", "a headshot of a man"],
    }
    suite = parse_spec(spec_with(prompts=prompts)).prompt_suite()
    assert [(p.group, p.index, p.text) for p in suite] == [
        ("identifier", 0, "a photo of zwx woman"),
        ("identifier", 1, "zwx woman, studio"),
        ("no_identifier", 0, "a photo of a woman"),
        ("no_identifier", 1, "a headshot of a man"),
    ]
    assert suite[1].template == "{identifier} {class_noun}, studio"


def test_default_prompt_suite_covers_several_headshot_styles():
    suite = parse_spec(MINIMAL).prompt_suite()
    with_id = [p for p in suite if p.group == "identifier"]
    without = [p for p in suite if p.group == "no_identifier"]
    assert len(with_id) >= 4 and all("sks person" in p.text for p in with_id)
    assert len(without) >= 3 and not any("sks" in p.text for p in without)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "version: 1\nname: x\n  subject: {demo: X\n")
    with pytest.raises(SpecError, match=r"invalid YAML at line 3"):
        load_spec(path)


def test_yaml_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "version: 1\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(SpecError, match=r"line 3.*duplicate key 'seeds' \(first at line 2\)"):
        load_spec(path)


def test_yaml_errors_carry_the_file_name(tmp_path):
    path = write(tmp_path, "version: 1\nname: x\nsubject: {demo: Colin_Powell}\nrecipes: [{name: toy}]\n")
    with pytest.raises(SpecError, match=r"spec\.yaml: 1 problem"):
        load_spec(path)


def test_unquoted_yaml_off_means_wandb_off(tmp_path):
    path = write(tmp_path, "version: 1\nname: x\nsubject: {demo: Colin_Powell}\n"
                           "recipes: [{name: none}]\ntracking: {wandb: off}\n")
    assert load_spec(path).tracking.wandb == "off"


def test_photo_paths_are_relative_to_the_spec_file(tmp_path):
    path = write(tmp_path, "version: 1\nname: x\nsubject: {photos: [me/1.jpg], id: subject-01}\n"
                           "recipes: [{name: none}]\n")
    spec = load_spec(path)
    assert spec.subject.photos == [str(tmp_path / "me" / "1.jpg")]
    assert spec.subject.id == "subject-01"


def test_missing_and_empty_files_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="empty"):
        load_spec(write(tmp_path, ""))
    with pytest.raises(SpecError, match="mapping of keys"):
        load_spec(write(tmp_path, "- 1\n- 2\n"))


def test_every_spec_model_forbids_extra_keys():
    models = [v for v in vars(spec_module).values()
              if isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == spec_module.__name__]
    assert len(models) >= 8
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
