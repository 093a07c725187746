"""The experiment spec: one versioned YAML file that says everything needed to rerun an experiment.

Every field and its default is in the block "The spec" below, one comment per line;
``experiments/README.md`` explains each one at length. Every model forbids unknown keys.

Load with :func:`load_spec` (a file) or :func:`parse_spec` (a dict). Both also validate each recipe's
``params`` against the recipe's registered ``Params`` model, and raise
:class:`~workbench.errors.SpecError` listing every problem by its field path, e.g.
``recipes[1].params.rank: Input should be a valid integer, got 'eight'``, before any work starts.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from workbench.backbones.registry import BACKBONES, HUB_ID
from workbench.errors import SpecError
from workbench.lifecycle.manifest import KINDS
from workbench.metrics import registry as metrics_registry
from workbench.metrics.finextract import FineXtractParams
from workbench.paths import check_subject_id
from workbench.recipes import registry
from workbench.subjects.protect import ProtectParams
from workbench.subjects.upscale import UpscaleParams

SPEC_VERSION = 1
TEMPLATE_FIELDS = ("identifier", "class_noun")

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_DEMO_NAME = re.compile(r"^[A-Za-z0-9][\w.'-]{0,99}$")


# ---------------------------------------------------------------------------------------------------
# Field checks (each raises ValueError with a message that says what is expected)

def _check_version(v: int) -> int:
    if v != SPEC_VERSION:
        raise ValueError(f"unsupported spec version {v}; this workbench reads version {SPEC_VERSION}")
    return v


def _check_slug(v: str) -> str:
    if not _SLUG.match(v):
        raise ValueError(f"{v!r} is not a slug: use 1-64 letters, digits, '-' or '_' (e.g. 'lora-r8')")
    return v


def _check_subject_id(v: str) -> str:
    return check_subject_id(v)


def _check_demo_name(v: str) -> str:
    if not _DEMO_NAME.match(v) or ".." in v:
        raise ValueError(f"{v!r} is not an LFW person name; expected e.g. 'Colin_Powell'")
    return v


def _check_backbone(v: str) -> str:
    if v in BACKBONES or v.startswith((".", "/", "~")) or HUB_ID.match(v):
        return v
    raise ValueError(
        f"{v!r} is not one of {', '.join(BACKBONES)}, a diffusers hub id "
        "('org/name', e.g. 'stable-diffusion-v1-5/stable-diffusion-v1-5') or a local folder "
        "('./folder' or '/absolute/folder')"
    )


def _template_fields(template: str) -> set[str]:
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise ValueError(f"template {template!r} has unbalanced braces ({exc})") from None
    unknown = sorted(names - set(TEMPLATE_FIELDS))
    if unknown:
        raise ValueError(
            f"template {template!r} uses unknown placeholder {{{unknown[0]}}}; "
            "allowed placeholders: {identifier}, {class_noun}"
        )
    return names


def _check_with_identifier(template: str) -> str:
    if "identifier" not in _template_fields(template):
        raise ValueError(
            f"template {template!r} must contain {{identifier}} (e.g. 'a photo of {{identifier}} "
            "{class_noun}'); prompts without it belong in prompts.without_identifier"
        )
    return template


def _check_without_identifier(template: str) -> str:
    if "identifier" in _template_fields(template):
        raise ValueError(
            f"template {template!r} must not contain {{identifier}}: these prompts measure concept "
            "bleed (the subject appearing unasked); move it to prompts.with_identifier"
        )
    return template


def _check_token(v: str) -> str:
    if not v or any(c.isspace() or c in "{}" for c in v):
        raise ValueError(f"identifier {v!r} must be one word without spaces or braces (e.g. 'sks')")
    return v


def _one_of(known: Callable[[], tuple[str, ...]], what: str):
    def check(v: str) -> str:
        if v not in known():
            raise ValueError(f"unknown {what} {v!r}; known: {', '.join(known())}")
        return v
    return check


def _check_kinds(kinds: dict[str, int]) -> dict[str, int]:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown artifact kind {unknown[0]!r}; known kinds: {', '.join(KINDS)}")
    return kinds


def _unique(items: list) -> list:
    dupes = sorted({repr(x) for x in items if items.count(x) > 1})
    if dupes:
        raise ValueError(f"{', '.join(dupes)} listed more than once")
    return items


def _yaml_off(v: Any) -> Any:
    # YAML 1.1 reads an unquoted `off` as the boolean false; take it to mean "off".
    return "off" if v is False else v


def _check_recipes(entries: list[RecipeEntry]) -> list[RecipeEntry]:
    if not any(e.name == "none" for e in entries):
        raise ValueError(
            "the untouched base model is the control every leakage number is compared with: "
            "add `- name: none` to recipes"
        )
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.label in seen:
            raise ValueError(
                f"recipes[{i}] has label {entry.label!r}, already used by recipes[{seen[entry.label]}]; "
                "give each entry a unique `label:`"
            )
        seen[entry.label] = i
    return entries


# Field types: the type plus its check, so the spec block below stays one line per field.
Slug = Annotated[str, AfterValidator(_check_slug)]
NonEmpty = Annotated[str, Field(min_length=1)]
Positive = Annotated[int, Field(ge=1)]
Days = Annotated[int, Field(ge=0)]
DemoName = Annotated[str, AfterValidator(_check_demo_name)]
PhotoList = Annotated[list[NonEmpty], Field(min_length=1)]
SubjectId = Annotated[str, AfterValidator(_check_subject_id)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Resolution = Annotated[int, Field(ge=16, le=2048, multiple_of=8)]
Backbone = Annotated[str, AfterValidator(_check_backbone)]
Token = Annotated[str, AfterValidator(_check_token)]
WithTemplates = Annotated[list[Annotated[str, AfterValidator(_check_with_identifier)]], Field(min_length=1)]
WithoutTemplates = Annotated[
    list[Annotated[str, AfterValidator(_check_without_identifier)]], Field(min_length=1)
]
Encoders = Annotated[
    list[Annotated[str, AfterValidator(_one_of(metrics_registry.encoders, "encoder"))]],
    Field(min_length=1), AfterValidator(_unique),
]
Attacks = Annotated[
    list[Annotated[str, AfterValidator(_one_of(metrics_registry.attacks, "membership-inference attack"))]],
    AfterValidator(_unique),
]
ExtractionAttacks = Annotated[list[Literal["finextract"]], AfterValidator(_unique)]
Seeds = Annotated[list[int], Field(min_length=1), AfterValidator(_unique)]
People = Annotated[list[DemoName], Field(min_length=2), AfterValidator(_unique)]
Folders = Annotated[list[NonEmpty], Field(min_length=2), AfterValidator(_unique)]
Recipes = Annotated[list["RecipeEntry"], Field(min_length=1), AfterValidator(_check_recipes)]
WandbMode = Annotated[Literal["off", "offline", "online"], BeforeValidator(_yaml_off)]
Kinds = Annotated[dict[str, Days], AfterValidator(_check_kinds)]

# Default prompt suite: several headshot styles, then prompts that must *not* produce the subject.
WITH_IDENTIFIER = (
    "a photo of {identifier} {class_noun}",
    "a professional headshot of {identifier} {class_noun}, studio lighting",
    "a linkedin profile photo of {identifier} {class_noun} in a suit",
    "a close-up portrait of {identifier} {class_noun} outdoors",
)
WITHOUT_IDENTIFIER = (
    "a photo of a {class_noun}",
    "a headshot of a man",
    "a headshot of a woman",
)


# ---------------------------------------------------------------------------------------------------
# The spec: every field and its default

class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not pass silently); no silent type coercion ("8" -> 8).
    model_config = ConfigDict(extra="forbid", strict=True)


class SubjectSpec(_Strict):
    demo: DemoName | None = None  # an LFW demo person, e.g. Colin_Powell ...
    photos: PhotoList | None = None  # ... or your own photos/folders (relative to the spec file)
    id: SubjectId | None = None  # pseudonymous slug; default: "demo-"/"subject-" + sha256(demo or photos)[:8]
    members: Positive | None = None  # training photos drawn at random from every accepted photo; None: 15
    holdout_fraction: Fraction | None = None  # instead of members: the share of photos kept out of training
    split_seed: int = 0  # seed of the random member draw (recorded in results.json meta.split)
    max_non_members: Positive | None = None  # cap on non-members (a random subset of the rest); None: all
    resolution: Resolution | None = None  # training/sampling size in px; None: the backbone's own
    protection: ProtectParams | None = None  # Anti-DreamBooth perturbation of the train photos, for `photos: protected`
    upscale: UpscaleParams | None = None  # accept faces too small for the resolution, crop enlarged <= max_factor

    @model_validator(mode="after")
    def _source_and_id(self) -> SubjectSpec:
        if (self.demo is None) == (self.photos is None):
            raise ValueError("give exactly one of `demo: <LFW person name>` or `photos: [paths]`")
        if self.members is not None and self.holdout_fraction is not None:
            raise ValueError("give `members` (how many photos train) or `holdout_fraction`, not both")
        if self.id is None:
            self.id = default_subject_id(self.demo, self.photos)
        return self


class CohortSpec(_Strict):
    people: People | None = None  # LFW people (../shared/data/lfw/people/<Name>) ...
    folders: Folders | None = None  # ... or one folder of photos per person
    members: Positive = 15  # training photos per person, drawn at random from all of that person's photos
    split_seed: int = 0  # seed of every person's member draw
    max_non_members: Positive | None = None  # cap on non-members per person; None: all the others
    resolution: Resolution | None = None  # training/sampling size in px; None: the backbone's own
    protection: ProtectParams | None = None  # Anti-DreamBooth perturbation of each person's train photos
    upscale: UpscaleParams | None = None  # as subject.upscale, for every person

    @model_validator(mode="after")
    def _one_source(self) -> CohortSpec:
        if (self.people is None) == (self.folders is None):
            raise ValueError("give exactly one of `people: [LFW names]` or `folders: [one folder per person]`")
        return self

    def subjects(self) -> list[SubjectSpec]:
        """One subject per person, each with the cohort's split settings (ids are hashes, never names)."""
        common = {"members": self.members, "split_seed": self.split_seed, "max_non_members": self.max_non_members,
                  "resolution": self.resolution, "protection": self.protection,
                  "upscale": self.upscale}
        if self.people is not None:
            return [SubjectSpec(demo=name, **common) for name in self.people]
        return [SubjectSpec(photos=[folder], **common) for folder in self.folders]


class RecipeEntry(_Strict):
    name: NonEmpty  # a registered recipe: none, lora, dreambooth, textual_inversion, pivotal
    label: Slug | None = None  # column name in results; default: name (labels must be unique)
    params: dict[str, Any] = {}  # the recipe's parameters; defaults live in workbench/recipes/<name>.py
    photos: Literal["clean", "protected"] = "clean"  # train on the photos as taken, or as subject.protection made them
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # params to vary: one entry per combination

    @model_validator(mode="after")
    def _default_label(self) -> RecipeEntry:
        if self.label is None:
            self.label = self.name if self.photos == "clean" else f"{self.name}-{self.photos}"
        return self

    def typed_params(self) -> registry.RecipeParams:
        """``params`` as the recipe's own pydantic ``Params`` model."""
        return registry.get_recipe(self.name).params.model_validate(self.params)


class PromptsSpec(_Strict):
    identifier: Token = "sks"  # rare token bound to the subject (DreamBooth)
    class_noun: NonEmpty = "person"  # the class the subject belongs to
    with_identifier: WithTemplates = list(WITH_IDENTIFIER)  # identity fidelity: the subject asked for
    without_identifier: WithoutTemplates = list(WITHOUT_IDENTIFIER)  # concept bleed: subject not asked for

    @model_validator(mode="after")
    def _no_hidden_identifier(self) -> PromptsSpec:
        for i, template in enumerate(self.without_identifier):
            text = template.format(class_noun=self.class_noun)
            if self.identifier in text.split():
                raise ValueError(
                    f"without_identifier[{i}] {text!r} contains the identifier {self.identifier!r} literally"
                )
        return self


class SamplingSpec(_Strict):
    steps: Positive = 25  # denoising steps per image (DDIM-style scheduler)
    guidance_scale: Annotated[float, Field(ge=0)] = 5.0  # classifier-free guidance weight
    batch_size: Positive = 8  # images generated per forward pass


class MetricsSpec(_Strict):
    encoders: Encoders = ["sface"]  # face-identity encoders for fidelity, bleed and verification
    mia_attacks: Attacks = ["loss", "loss_t", "pia", "secmi"]  # membership-inference attacks (members vs not)
    extraction_attacks: ExtractionAttacks = []  # model-file extraction: [] or [finextract] (slow)
    finextract: FineXtractParams = FineXtractParams()  # FineXtract's w, k, steps, generations per photo


class TrackingSpec(_Strict):
    wandb: WandbMode = "offline"  # Weights & Biases mirror: off, offline (sync later) or online
    project: NonEmpty = "headshot-workbench"  # W&B project name
    log_images: bool = False  # privacy: face images go to W&B only if you opt in


class RetentionSpec(_Strict):
    default_days: Days = 30  # days an artifact is kept before a purge deletes it
    kinds: Kinds = {}  # per-artifact-kind overrides in days, e.g. {upload: 7, weights: 90}
    # encryption at rest of the subject's folder (crypto-shredding); None: keep the subject's setting. Not in
    # spec.json: it does not change what is computed
    encrypt: bool | None = None

    def days_for(self, kind: str) -> int:
        return self.kinds.get(kind, self.default_days)


class ResourcesSpec(_Strict):
    num_cpus: Annotated[float, Field(gt=0)] = 1  # CPUs each Ray task (one row) asks for
    num_gpus: Annotated[float, Field(ge=0)] | None = None  # GPUs per task; None: 0 for tiny-face or device cpu, else 1
    custom: dict[str, Annotated[float, Field(gt=0)]] = {}  # Ray custom resources per task, e.g. {nfs: 1}


class ExecutionSpec(_Strict):
    # Where the rows run; not part of what is computed: left out of spec.json, results.json and the run folder name
    executor: Literal["local", "ray"] = "local"  # local: this process, in order; ray: one Ray task per row
    address: NonEmpty | None = None  # Ray cluster: None starts a local Ray (loopback), "auto", "host:6379", "ray://h:10001"
    resources: ResourcesSpec = ResourcesSpec()  # what each Ray task asks the scheduler for
    max_retries: Annotated[int, Field(ge=0)] = 3  # Ray retries of a task after a system failure (a lost node)


class Spec(_Strict):
    version: Annotated[int, AfterValidator(_check_version)]  # spec format version: 1
    name: Slug  # experiment name; names the run folder
    subject: SubjectSpec | None = None  # whose photos (one person) ...
    cohort: CohortSpec | None = None  # ... or several people: one model per person per recipe, pooled statistics
    backbone: Backbone = "tiny-face"  # base model: tiny-face, a diffusers hub id or a local folder
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda, then mps, then cpu
    recipes: Recipes  # what to compare; must include the `none` control
    prompts: PromptsSpec = PromptsSpec()  # prompt suite
    seeds: Seeds = [0]  # one full train + generate + measure per seed
    images_per_prompt: Positive = 2  # generations per prompt and seed
    sampling: SamplingSpec = SamplingSpec()  # how images are generated
    metrics: MetricsSpec = MetricsSpec()  # what is measured
    tracking: TrackingSpec = TrackingSpec()  # Weights & Biases mirror of the run store
    retention: RetentionSpec = RetentionSpec()  # how long derived artifacts live
    execution: ExecutionSpec = ExecutionSpec()  # where the rows run (local or Ray); the results are the same

    @model_validator(mode="after")
    def _protection_for_protected_photos(self) -> Spec:
        if (self.subject is None) == (self.cohort is None):
            raise ValueError("subject: give exactly one of `subject:` (one person) or `cohort:` (several people)")
        protection = (self.subject or self.cohort).protection
        for i, entry in enumerate(self.recipes):
            if entry.photos == "protected" and protection is None:
                raise ValueError(
                    f"recipes[{i}].photos: 'protected' needs subject.protection, which is not set: add e.g. "
                    "`protection: {method: aspl, epsilon: 0.05}` under subject, or use `photos: clean`"
                )
        return self

    def subjects(self) -> list[SubjectSpec]:
        """The people of this experiment: the one subject, or every person of the cohort."""
        return [self.subject] if self.subject is not None else self.cohort.subjects()

    @property
    def run_subject_id(self) -> str:
        """The id that names the run: the subject's, or ``cohort-`` + a hash of the cohort's subject ids."""
        if self.subject is not None:
            return self.subject.id
        return "cohort-" + hashlib.sha256("\n".join(s.id for s in self.subjects()).encode()).hexdigest()[:8]

    def prompt_suite(self) -> list[PromptItem]:
        """The expanded prompts: identifier prompts, then concept-bleed prompts, in spec order."""
        fill = {"identifier": self.prompts.identifier, "class_noun": self.prompts.class_noun}
        groups = (
            ("identifier", self.prompts.with_identifier),
            ("no_identifier", self.prompts.without_identifier),
        )
        return [
            PromptItem(text=template.format(**fill), template=template, group=group, index=i)
            for group, templates in groups
            for i, template in enumerate(templates)
        ]

    def resolved(self) -> dict[str, Any]:
        """The fully defaulted spec as JSON-serialisable data (written into every run folder). ``execution``
        and ``retention.encrypt`` are left out: where the rows ran and how their files are stored do not change
        what they computed (run.json records the executor)."""
        return self.model_dump(mode="json", exclude={"execution": True, "retention": {"encrypt"}})


@dataclass(frozen=True)
class PromptItem:
    text: str  # the prompt given to the model
    template: str  # the spec template it came from
    group: Literal["identifier", "no_identifier"]  # identity fidelity vs concept bleed
    index: int  # position of the template in prompts.with_identifier / prompts.without_identifier


def default_subject_id(demo: str | None, photos: list[str] | None) -> str:
    """A pseudonymous id: a hash of the demo name or photo list, so names never become folder names."""
    if demo is not None:
        return "demo-" + hashlib.sha256(demo.encode()).hexdigest()[:8]
    return "subject-" + hashlib.sha256("\n".join(photos or []).encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------------
# Loading and error reporting

class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key: PyYAML's own check reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec; relative photo and backbone paths are relative to the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        raise SpecError(f"{path}: the spec is empty; start from experiments/quickstart.yaml")
    return parse_spec(data, base_dir=path.parent, source=str(path))


def parse_spec(data: dict[str, Any], base_dir: str | Path | None = None, source: str = "spec") -> Spec:
    """Validate a spec given as a dict (e.g. parsed YAML, or :meth:`Spec.resolved` output).

    Structure and values are checked by the models above; each recipe's ``params`` by the recipe's
    own ``Params`` model from the registry. All problems are reported together in one SpecError.
    """
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a spec is a mapping of keys ({', '.join(Spec.model_fields)}), "
            f"not {type(data).__name__}; start from experiments/quickstart.yaml"
        )
    problems: list[str] = []
    spec = None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems += _describe_errors(exc, Spec)
    recipe_problems, params = _validate_recipe_params(data)
    problems += recipe_problems
    if problems:
        err = SpecError(
            f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the experiment spec\n"
            + "\n".join(f"  {p}" for p in problems)
        )
        err.problems = problems
        raise err
    spec.recipes, problems = _expand_sweeps(spec, params)  # params fully defaulted by each Params model
    if problems:
        raise SpecError(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the experiment "
                        "spec\n" + "\n".join(f"  {p}" for p in problems))
    if base_dir is not None:
        _resolve_paths(spec, Path(base_dir))
    return spec


def _validate_recipe_params(data: Any) -> tuple[list[str], dict[int, dict[str, Any]]]:
    entries = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return [], {}  # the structural check reports it
    problems, params = [], {}
    known = registry.load_all()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            continue
        if entry["name"] not in known:
            names = ", ".join(sorted(known))
            problems.append(f"recipes[{i}].name: unknown recipe {entry['name']!r}; known recipes: {names}")
            continue
        raw, sweep = entry.get("params", {}), entry.get("sweep", {})
        if not isinstance(raw, dict) or not isinstance(sweep, dict):
            continue
        model = known[entry["name"]].params
        params[i] = []
        for combo in sweep_combinations(sweep):
            try:
                params[i].append(model.model_validate(raw | combo).model_dump(mode="json"))
            except ValidationError as exc:
                for e in exc.errors():
                    swept = bool(e["loc"]) and e["loc"][0] in combo
                    prefix = ("recipes", i, "sweep") if swept else ("recipes", i, "params")
                    for problem in _describe_errors(ValidationError.from_exception_data(exc.title, [e]), model, prefix):
                        problems += [] if problem in problems else [problem]  # once, not per combination
    return problems, params


def sweep_combinations(sweep: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the swept values, in spec order (``[{}]`` without a sweep)."""
    if not all(isinstance(v, list) for v in sweep.values()):
        return [{}]  # the structural check reports it
    return [dict(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())]


def _sweep_label(label: str, combo: dict[str, Any]) -> str:
    def word(v: Any) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "", str(v).lower().replace(".", "p").replace("-", "m"))

    return "-".join([label] + [f"{k}-{word(v)}" for k, v in combo.items()])


def _expand_sweeps(spec: Spec, params: dict[int, list[dict[str, Any]]]) -> tuple[list[RecipeEntry], list[str]]:
    """One entry per swept combination, labelled ``<label>-<param>-<value>``, params fully defaulted;
    and the problems with the generated labels, named by the spec's own entry index."""
    out, origin, problems = [], {}, []
    for i, entry in enumerate(spec.recipes):
        for combo, values in zip(sweep_combinations(entry.sweep), params[i], strict=True):
            label = _sweep_label(entry.label, combo) if entry.sweep else entry.label
            if label in origin:
                problems.append(f"recipes[{i}]: label {label!r} is already used by recipes[{origin[label]}]; "
                                "give each entry (and each swept entry's base) a unique `label:`")
            elif not _SLUG.match(label):
                problems.append(f"recipes[{i}].sweep: the generated label {label!r} is longer than 64 characters; "
                                "give the entry a shorter `label:`")
            origin.setdefault(label, i)
            out.append(entry.model_copy(update={"params": values, "label": label, "sweep": {}}))
    return out, problems


def _resolve_paths(spec: Spec, base: Path) -> None:
    if spec.subject is not None and spec.subject.photos is not None:
        spec.subject.photos = [str((base / Path(p).expanduser()).resolve()) for p in spec.subject.photos]
    if spec.cohort is not None and spec.cohort.folders is not None:
        spec.cohort.folders = [str((base / Path(p).expanduser()).resolve()) for p in spec.cohort.folders]
    if spec.backbone.startswith((".", "~")):
        spec.backbone = str((base / Path(spec.backbone).expanduser()).resolve())


_FIELD_PATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


def _describe_errors(exc: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[str]:
    out = []
    for e in exc.errors():
        loc, msg = prefix + tuple(e["loc"]), _message(e, model)
        # a whole-spec check names its own field ("recipes[2].photos: ..."): no "(top level)" before it
        out.append(msg if not loc and _FIELD_PATH.match(msg) else f"{_path(loc)}: {msg}")
    return out


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict, model: type[BaseModel]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        return f"unknown key {err['loc'][-1]!r}; allowed keys here: {', '.join(allowed) or '(none)'}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "model_attributes_type"):
        keys = ", ".join(_allowed_keys(model, err["loc"]))
        return f"expected a mapping with keys from: {keys}; got {_short(err['input'])}"
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{msg}, got {_short(err['input'])}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model found by following ``loc`` through fields, lists and dicts."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = tp.model_fields.get(part)
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to X."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or type(tp).__name__ == "UnionType":
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
