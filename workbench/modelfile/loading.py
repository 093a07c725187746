"""Load a vendor's model file on its own base, through diffusers' own loaders (``--model FILE --base ID``).

What ``--model`` takes, recognised by content (:mod:`.formats`), never by name:

- a LoRA ``.safetensors`` in diffusers/peft or kohya/A1111 format → ``pipe.load_lora_weights(folder,
  weight_name=...)`` on the base (diffusers converts kohya's ``lora_unet_*``/``lora_te_*`` names itself);
- a textual-inversion embedding ``.safetensors`` → ``pipe.load_textual_inversion(file)`` (A1111's
  ``emb_params``/``string_to_param`` files get the token ``<file stem>``);
- a diffusers pipeline folder (``model_index.json``) → the whole pipeline (a full fine-tune);
- a workbench artifact or run folder (``DONE.json``) → :func:`workbench.recipes.artifacts.load_personalised`;
- a folder holding one LoRA (and/or one embedding) file;
- a ``.tar``/``.tar.gz``/``.zip`` of any of these: every member is checked before extraction
  (:func:`workbench.modelfile.archive.extract`), into a scratch folder under ``$WORKBENCH_HOME`` that is
  registered for erasure with the owner's manifest and deleted (with tombstones) when the command ends.

Pickle files (``.bin``/``.pt``/``.ckpt``) are refused: loading one runs code. Before anything is loaded, the
file's base family (:func:`workbench.modelfile.formats.infer_family`: SD 1.x/2.x, SDXL, Flux, tiny-face) is
compared with the base's (its UNet config's cross-attention width and SDXL's ``text_time`` conditioning); a
mismatch is a :class:`UserError` naming both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench import paths
from workbench.errors import UserError
from workbench.modelfile import formats
from workbench.modelfile.archive import _is_torch_zip, archive_kind, extract

log = logging.getLogger(__name__)

LORA_FORMATS = ("kohya-lora", "diffusers-lora")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SCRATCH = "scratch"  # inside the owner's subject folder: erased with the subject
UNKNOWN = ("unknown", "ambiguous")


@dataclass
class ModelFile:
    """What ``--model`` points at, classified; ``folder`` is what diffusers loads from."""

    path: Path  # as given
    container: str  # file, folder, tar, tar.gz, zip
    kind: str  # lora, textual-inversion, lora+textual-inversion, pipeline, workbench-artifact
    format: str  # the weight format (formats.WEIGHT_FORMATS name), diffusers-pipeline or workbench-artifact
    family: str  # formats.infer_family's verdict (or the pipeline's/artifact's)
    evidence: list[str] = field(default_factory=list)
    folder: Path | None = None
    lora: str | None = None  # weight file name inside folder
    embedding: str | None = None  # textual-inversion file name inside folder
    token: str | None = None  # the textual-inversion token, as prompts must write it
    done: dict | None = None  # a workbench artifact's DONE.json
    scratch: Path | None = None  # where an archive was extracted (deleted on exit)

    @property
    def identifier(self) -> str | None:
        """The token the model binds the person to, when the file says it (TI token, DONE.json)."""
        return self.token or (self.done or {}).get("identifier")

    def describe(self) -> dict:
        return {"path": str(self.path), "container": self.container, "kind": self.kind, "format": self.format,
                "family": self.family, "family_evidence": self.evidence, "lora": self.lora,
                "embedding": self.embedding, "token": self.token,
                "extracted": self.scratch is not None}


def owner_id(path: str | Path) -> str:
    """A pseudonymous owner for a vendor file given without ``--subject``: ``model-`` + a hash of its
    location, size and time (never its name), so scratch copies and generations are erasable."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}\n{st.st_size}\n{st.st_mtime_ns}"
    return "model-" + hashlib.sha256(key.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------
# Classification


def _header(path: Path) -> formats.SafetensorsHeader | None:
    with open(path, "rb") as fh:
        head = fh.read(16)
        size = path.stat().st_size
        if not formats.is_safetensors(head, size):
            return None
        fh.seek(0)
        try:
            return formats.read_safetensors_header(fh, size)
        except formats.FormatError as exc:
            raise UserError(f"{path.name}: a damaged safetensors file ({exc})") from None


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if formats.is_pickle(head) or _is_torch_zip(path) or path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"{path.name}: a pickle-based file (.bin/.pt/.ckpt) is never loaded here, because "
                        "unpickling runs whatever code it names; ask for .safetensors (`workbench inspect` "
                        "lists what it would import)")


def _ti_token(path: Path, header: formats.SafetensorsHeader) -> tuple[str, str | None]:
    """(the token prompts write, the ``token=`` argument for load_textual_inversion or None)."""
    keys = list(header.tensors)
    if len(keys) == 1 and keys[0] not in ("emb_params", "clip_l", "clip_g") \
            and not keys[0].startswith(("string_to_param.", "string_to_token.")):
        return keys[0], None  # diffusers format: {token: (n, D)}
    token = f"<{path.stem}>"
    return token, token


def _merge(a: str, b: str) -> str:
    """Two files' families as one verdict: the known one, the same one, or "ambiguous"."""
    if a in ("", "unknown") or a == b:
        return b
    if b == "unknown":
        return a
    return "ambiguous"


def _classify_file(path: Path, model: ModelFile) -> str:
    """``lora`` or ``textual-inversion`` for a weight file; sets format/family on ``model``."""
    header = _header(path)
    if header is None:
        _refuse_pickle(path)
        raise UserError(f"{path.name} is not a safetensors weight file (judged by its content)")
    fmt = formats.weight_format(header)
    name = fmt.name if fmt else "unknown"
    if name not in LORA_FORMATS + ("textual-inversion",):
        what = fmt.label if fmt else "weights of no known format"
        raise UserError(f"{path.name}: {what}; --model takes a LoRA (diffusers or kohya), a textual-inversion "
                        "embedding, a diffusers pipeline folder or a .tar of one")
    guess = formats.infer_family(header)
    model.format = name if not model.format else f"{model.format}+{name}"
    model.family = _merge(model.family, guess.family)
    model.evidence += [f"{path.name}: {r}" for r in guess.reasons]
    if name == "textual-inversion":
        model.token, _ = _ti_token(path, header)
        return "textual-inversion"
    return "lora"


def _pipeline_family(unet_config: dict) -> formats.FamilyGuess:
    """A pipeline's family from its UNet config: SDXL's ``text_time`` conditioning, else cross-attention width."""
    if unet_config.get("addition_embed_type") == "text_time":
        return formats.FamilyGuess("SDXL", ["UNet addition_embed_type 'text_time' (size/crop conditioning)"])
    dim = unet_config.get("cross_attention_dim")
    dim = dim[0] if isinstance(dim, (list, tuple)) else dim
    family = formats.CROSS_ATTENTION_DIMS.get(dim)
    if family is None:
        return formats.FamilyGuess("unknown", [f"cross-attention width {dim} belongs to no known family"])
    return formats.FamilyGuess(family, [f"cross-attention width {dim} (UNet config)"])


def _find_pipeline(root: Path) -> Path | None:
    if (root / "model_index.json").is_file():
        return root
    found = sorted(p.parent for p in root.rglob("model_index.json"))
    return found[0] if len(found) == 1 else None


def _find_artifact(root: Path) -> Path | None:
    from workbench.recipes.artifacts import ARTIFACT, DONE

    for cand in (root, root / ARTIFACT):
        if (cand / DONE).is_file():
            return cand
    found = sorted(p.parent for p in root.rglob(DONE))
    return found[0] if len(found) == 1 else None


def classify(root: Path, container: str, given: Path) -> ModelFile:
    """Classify a file or folder (an extracted archive's folder included) as a :class:`ModelFile`."""
    model = ModelFile(given, container, "", "", "")
    if root.is_file():
        kind = _classify_file(root, model)
        model.folder = root.parent
        setattr(model, "lora" if kind == "lora" else "embedding", root.name)
        model.kind = kind
        return model
    artifact = _find_artifact(root)
    if artifact is not None:
        from workbench.recipes.artifacts import read_done

        model.done, model.folder, model.kind, model.format = read_done(artifact), artifact, "workbench-artifact", \
            "workbench-artifact"
        files = model.done.get("files", {})
        for role in ("lora", "embeddings"):
            if role in files:
                _classify_file(artifact / files[role], model)
        model.format = "workbench-artifact" + (f" ({model.format.removeprefix('workbench-artifact+')})"
                                               if "+" in model.format else "")
        if "pipeline" in files:
            cfg = artifact / files["pipeline"] / "unet" / "config.json"
            if cfg.is_file():
                guess = _pipeline_family(json.loads(cfg.read_text()))
                model.family, model.evidence = guess.family, guess.reasons
        model.family = model.family or "unknown"
        if model.token is None and model.done.get("identifier", "").startswith("<"):
            model.token = model.done["identifier"]
        return model
    pipeline = _find_pipeline(root)
    if pipeline is not None:
        cfg = pipeline / "unet" / "config.json"
        guess = _pipeline_family(json.loads(cfg.read_text())) if cfg.is_file() else formats.FamilyGuess(
            "unknown", ["no unet/config.json"])
        model.kind, model.format, model.folder = "pipeline", "diffusers-pipeline", pipeline
        model.family, model.evidence = guess.family, guess.reasons
        return model
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    weights = [p for p in files if _header(p) is not None]
    if not weights:
        for p in files:
            _refuse_pickle(p)
        raise UserError(f"{given}: holds no safetensors weights, no model_index.json and no DONE.json")
    loras, embeddings = [], []
    for p in weights:
        probe = ModelFile(given, container, "", "", "")
        try:
            (loras if _classify_file(p, probe) == "lora" else embeddings).append(p)
        except UserError:
            continue  # other weights (a VAE, a text encoder) are not what --model loads
    if len(loras) > 1 or len(embeddings) > 1 or not (loras or embeddings):
        names = ", ".join(p.relative_to(root).as_posix() for p in loras + embeddings) or "none"
        raise UserError(f"{given}: expected one LoRA and/or one textual-inversion file, found {names}; "
                        "pass the file itself as --model")
    chosen = loras + embeddings
    if len({p.parent for p in chosen}) > 1:
        raise UserError(f"{given}: the LoRA and the embedding lie in different folders; pass one file as --model")
    model.folder = chosen[0].parent
    for p in chosen:
        _classify_file(p, model)
    model.lora = loras[0].name if loras else None
    model.embedding = embeddings[0].name if embeddings else None
    model.kind = "+".join(k for k, on in (("lora", loras), ("textual-inversion", embeddings)) if on)
    return model


# ---------------------------------------------------------------------------------------------------
# Opening (extracting archives into registered scratch) and loading


def _scratch(owner: str) -> Path:
    folder = paths.subject_dir(owner) / SCRATCH / f"model-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def _drop_scratch(owner: str, folder: Path) -> None:
    from workbench.lifecycle import manifest

    shutil.rmtree(folder, ignore_errors=True)
    prefix = manifest._rel(folder).rstrip("/") + "/"
    for art in manifest.live(owner):
        if art.path.startswith(prefix):
            manifest.tombstone(owner, art, "temporary extraction of a model file, removed when the command ended")


@contextmanager
def open_model(path: str | Path, owner: str | None = None) -> Iterator[ModelFile]:
    """Classify ``path`` (:func:`classify`); an archive is extracted first, safely, into a scratch folder of
    ``owner`` (default :func:`owner_id`), registered for erasure and removed on exit."""
    from workbench.lifecycle import manifest
    from workbench.lifecycle.erasure import working_on

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"--model {path}: no such file or folder")
    if path.is_dir():
        yield classify(path, "folder", path)
        return
    kind = archive_kind(path)
    if kind is None or _is_torch_zip(path):
        yield classify(path, "file", path)
        return
    owner = owner or owner_id(path)
    with working_on(owner, must_exist=False):  # an encrypted owner: extracted into its working copy, not the store
        folder = _scratch(owner)
        try:
            extract(path, folder)
            manifest.register(owner, "weights", folder)
            model = classify(folder, kind, path)
            model.scratch = folder
            yield model
        finally:
            _drop_scratch(owner, folder)


def base_family(base: str) -> formats.FamilyGuess:
    """The family of a backbone (registered name, folder or hub id in the local cache), from its UNet config."""
    from workbench.backbones.registry import resolve_backbone

    source = resolve_backbone(base)
    cfg = Path(source) / "unet" / "config.json"
    if cfg.is_file():
        return _pipeline_family(json.loads(cfg.read_text()))
    try:
        from diffusers import UNet2DConditionModel

        return _pipeline_family(dict(UNet2DConditionModel.load_config(source, subfolder="unet",
                                                                       local_files_only=True)))
    except Exception:  # noqa: BLE001 - not cached here: checked again on the loaded pipeline
        return formats.FamilyGuess("unknown", [f"{base}: its UNet config is not available before loading"])


def check_family(model: ModelFile, base: str, family: formats.FamilyGuess | None = None) -> str | None:
    """A :class:`UserError` when the file's family and the base's differ; a note when either is unknown."""
    family = family or base_family(base)
    if model.family in UNKNOWN or family.family in UNKNOWN:
        note = (f"the base family could not be checked: file {model.family} ({'; '.join(model.evidence) or '-'}), "
                f"base {base} {family.text()}")
        log.warning("%s", note)
        return note
    if model.family != family.family:
        raise UserError(f"--model {model.path.name} is for {model.family} ({'; '.join(model.evidence)}), but --base "
                        f"{base} is {family.text()}: pass a base of the file's family")
    return None


def load_model(model: ModelFile, base: str | None, device: str = "cpu"):
    """The personalised pipeline: the base plus the file, loaded with diffusers' own loaders."""
    from workbench.backbones.registry import load_backbone
    from workbench.recipes.artifacts import load_personalised

    if model.kind == "workbench-artifact":
        if base:
            check_family(model, base)
        return load_personalised(base, model.folder, device)
    if model.kind == "pipeline":
        if base:
            check_family(model, base)
        return load_backbone(str(model.folder), device)
    if not base:
        raise UserError(f"--model {model.path.name} holds only {model.kind} weights ({model.family}): pass the base "
                        "it was trained on with --base (a backbone name, diffusers folder or hub id)")
    check_family(model, base)
    pipe = load_backbone(base, device)
    check_family(model, base, _pipeline_family(dict(pipe.unet.config)))  # the loaded base, if it was not cached
    try:
        if model.embedding:
            header = _header(model.folder / model.embedding)
            prompt_token, token = _ti_token(model.folder / model.embedding, header)
            if {"clip_l", "clip_g"} <= set(header.tensors):  # SDXL: one row per text encoder
                from workbench.recipes.textual_inversion import load_embeds

                load_embeds(pipe, model.folder, model.embedding, prompt_token)
            else:
                pipe.load_textual_inversion(str(model.folder / model.embedding), **({"token": token} if token else {}))
        if model.lora:
            pipe.load_lora_weights(str(model.folder), weight_name=model.lora)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"diffusers could not load {model.path.name} onto {base}: {exc}") from None
    return pipe
