"""What a weight file is, read without loading a tensor and without unpickling anything.

- **safetensors**: :func:`read_safetensors_header` reads the 8-byte little-endian header length and the
  JSON header itself (names, dtypes, shapes, offsets, ``__metadata__``), checking every offset against the
  file size; tensor data is never read. Format: huggingface/safetensors, "Format" (README), whose own
  loader caps the header at 100 MB.
- **pickle** (``.ckpt``, ``.pt``, ``.bin``, ``.pkl``; torch's zip container holds ``data.pkl``): never
  unpickled — ``pickle.load``/``torch.load`` run whatever callable the file names. :func:`scan_pickle`
  walks the opcodes with :func:`pickletools.genops`, a disassembler that builds no object, to list the
  callables the file would import (``GLOBAL``/``STACK_GLOBAL``) and the strings it holds (its key names).

Weight formats (:data:`WEIGHT_FORMATS`) and base families (:data:`FAMILY_RULES`) are registries, tried
in order, over the key names and shapes:

- kohya/A1111 LoRA: ``lora_unet_*``/``lora_te[12]_*`` + ``.lora_down.weight``/``.lora_up.weight``/``.alpha``
  (kohya-ss/sd-scripts ``networks/lora.py``); diffusers/peft LoRA: ``.lora_A.weight``/``.lora_B.weight`` or
  ``.lora.down.weight`` (diffusers ``convert_state_dict_to_diffusers``); textual inversion: a few
  embedding vectors (``{token: (n, D)}`` diffusers, ``emb_params``/``string_to_param`` A1111,
  ``clip_l``/``clip_g`` SDXL); single-file checkpoints (``model.diffusion_model.*``, the LDM layout);
  diffusers component weights (UNet, CLIP text encoder, VAE); Flux transformers
  (``double_blocks``/``single_blocks``, black-forest-labs/flux).
- family: cross-attention width (``attn2.to_k`` input size): SD 1.x 768 (CLIP ViT-L/14), SD 2.x 1024
  (OpenCLIP ViT-H/14), SDXL 2048 (768 + 1280, two text encoders; Podell et al. 2023); SDXL's
  ``add_embedding``/``label_emb`` (size/crop conditioning) and second text encoder; Flux's
  double/single-stream blocks; kohya's ``ss_base_model_version``/``ss_v2`` and ``modelspec.architecture``.
"""

from __future__ import annotations

import json
import pickletools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
MAX_PICKLE_SCAN_BYTES = 64 << 20  # opcodes scanned at most (strings and imports come early)


class FormatError(ValueError):
    """The file is damaged or not what its content first suggested."""


# ---------------------------------------------------------------------------------------------------
# safetensors


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]


@dataclass
class SafetensorsHeader:
    tensors: dict[str, Tensor]
    metadata: dict[str, str]

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors.values():
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total


def is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"


def read_safetensors_header(fh: BinaryIO, size: int) -> SafetensorsHeader:
    """The header of a safetensors file of ``size`` bytes open at its start; tensor data is not read."""
    raw = fh.read(8)
    if len(raw) != 8:
        raise FormatError("shorter than a safetensors header")
    n = int.from_bytes(raw, "little")
    if n > MAX_HEADER_BYTES or n + 8 > size:
        raise FormatError(f"header length {n} does not fit the file ({size} bytes)")
    text = fh.read(n)
    if len(text) != n:
        raise FormatError("the header is cut short")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"the header is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise FormatError("the header is not a JSON object")
    meta = obj.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise FormatError("__metadata__ is not an object")
    data_len = size - 8 - n
    tensors: dict[str, Tensor] = {}
    for name, info in obj.items():
        shape, offs = (info.get("shape"), info.get("data_offsets")) if isinstance(info, dict) else (None, None)
        if (not isinstance(info.get("dtype") if isinstance(info, dict) else None, str)
                or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_len):
            raise FormatError(f"tensor {name!r} has a malformed entry (dtype, shape or offsets out of the file)")
        tensors[name] = Tensor(info["dtype"], tuple(shape))
    return SafetensorsHeader(tensors, {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})


# ---------------------------------------------------------------------------------------------------
# pickle: opcodes only


PICKLE_NAMES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
#: Imports a torch checkpoint needs; anything else in a pickle is code the file would run on load.
TORCH_SAFE_GLOBALS = re.compile(r"^(torch(\._utils|\.nn\.parameter|\._tensor)?|collections|numpy(\.core\.multiarray)?"
                                r"|numpy\._core\.multiarray|_codecs|pytorch_lightning\.callbacks\.model_checkpoint)"
                                r"\s")


def is_pickle(head: bytes) -> bool:
    """Protocol 2+ pickles start with PROTO (0x80) and the protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


@dataclass
class PickleScan:
    imports: list[str] = field(default_factory=list)  # "module name" of every GLOBAL/STACK_GLOBAL
    strings: list[str] = field(default_factory=list)  # string constants, in order (dict keys among them)
    error: str | None = None  # where disassembly stopped, if it did

    @property
    def unsafe_imports(self) -> list[str]:
        return sorted({i for i in self.imports if not TORCH_SAFE_GLOBALS.match(i + " ")})


def scan_pickle(fh: BinaryIO, max_strings: int = 20000) -> PickleScan:
    """Disassemble a pickle stream (:func:`pickletools.genops`: nothing is constructed or called)."""
    scan = PickleScan()
    recent: list[str] = []
    try:
        for op, arg, pos in pickletools.genops(fh):
            if pos is not None and pos > MAX_PICKLE_SCAN_BYTES:
                scan.error = f"scan stopped after {MAX_PICKLE_SCAN_BYTES >> 20} MiB"
                break
            if op.name == "GLOBAL" and isinstance(arg, str):
                scan.imports.append(arg)
            elif op.name == "STACK_GLOBAL" and len(recent) >= 2:
                scan.imports.append(f"{recent[-2]} {recent[-1]}")
            elif isinstance(arg, str) and op.name.endswith(("UNICODE", "STRING")):
                recent = (recent + [arg])[-2:]
                if len(scan.strings) < max_strings:
                    scan.strings.append(arg)
            elif isinstance(arg, bytes) and op.name.endswith("BYTES") and len(arg) < 256:
                recent = (recent + [arg.decode("latin-1")])[-2:]
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile stream stops the disassembler anywhere
        scan.error = f"disassembly stopped: {exc}"
    return scan


# ---------------------------------------------------------------------------------------------------
# Weight formats: a registry of predicates over key names (first match wins).

_KOHYA = re.compile(r"^lora_(unet|te\d?|transformer)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")
_DIFFUSERS_LORA = re.compile(r"\.(lora_[AB]\.weight|lora\.(down|up)\.weight|lora_linear_layer\.(down|up)\.weight)$")
_TOKEN_EMBEDDING = re.compile(r"(^|\.)embeddings\.token_embedding\.weight$")
_TI_KEYS = re.compile(r"^(emb_params|clip_l|clip_g|string_to_param\..*|string_to_token\..*|<[^>]+>|[^.]+)$")


@dataclass(frozen=True)
class WeightFormat:
    name: str
    label: str
    test: Callable[[SafetensorsHeader], bool]
    loads_with: str  # how diffusers loads it


def _share(keys, pred) -> float:
    keys = list(keys)
    return sum(1 for k in keys if pred(k)) / len(keys) if keys else 0.0


def _is_ti(h: SafetensorsHeader) -> bool:
    return (0 < len(h.tensors) <= 8 and all(_TI_KEYS.match(k) for k in h.tensors)
            and all(1 <= len(t.shape) <= 2 for t in h.tensors.values()))


WEIGHT_FORMATS: tuple[WeightFormat, ...] = (
    WeightFormat("kohya-lora", "kohya/A1111 LoRA (lora_unet_*/lora_te_* keys, lora_down/lora_up/alpha)",
                 lambda h: _share(h.tensors, _KOHYA.match) > 0.9,
                 "pipe.load_lora_weights(folder, weight_name=...) (diffusers converts kohya keys)"),
    WeightFormat("diffusers-lora", "diffusers/peft LoRA (lora_A/lora_B or lora.down/lora.up keys)",
                 lambda h: _share(h.tensors, _DIFFUSERS_LORA.search) > 0.9,
                 "pipe.load_lora_weights(folder, weight_name=...)"),
    WeightFormat("textual-inversion", "textual inversion embedding (a few learned token vectors)", _is_ti,
                 "pipe.load_textual_inversion(file)"),
    WeightFormat("single-file-checkpoint", "full single-file checkpoint (LDM/A1111 layout: model.diffusion_model.*)",
                 lambda h: any(k.startswith("model.diffusion_model.") for k in h.tensors),
                 "Pipeline.from_single_file(file)"),
    WeightFormat("flux-transformer", "Flux transformer weights (double/single-stream blocks)",
                 lambda h: any(k.startswith(("double_blocks.", "single_blocks.", "single_transformer_blocks."))
                               for k in h.tensors),
                 "FluxTransformer2DModel (from_single_file or a diffusers folder)"),
    WeightFormat("diffusers-unet", "diffusers UNet weights (a full fine-tune's UNet)",
                 lambda h: any(k.startswith("conv_in.") for k in h.tensors)
                 and any(k.startswith(("down_blocks.", "up_blocks.")) for k in h.tensors),
                 "part of a diffusers pipeline folder"),
    WeightFormat("text-encoder", "CLIP text encoder weights",
                 lambda h: any(_TOKEN_EMBEDDING.search(k) for k in h.tensors), "part of a diffusers pipeline folder"),
    WeightFormat("vae", "VAE weights", lambda h: any(k.startswith("encoder.down_blocks.") for k in h.tensors)
                 and any(k.startswith("decoder.") for k in h.tensors), "part of a diffusers pipeline folder"),
)


def weight_format(h: SafetensorsHeader) -> WeightFormat | None:
    return next((f for f in WEIGHT_FORMATS if f.test(h)), None)


# ---------------------------------------------------------------------------------------------------
# Base families: each rule returns a reason when its evidence is present.

#: Cross-attention width (the text embedding the UNet attends to) -> family.
CROSS_ATTENTION_DIMS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 64: "tiny-face (workbench test backbone)"}
#: Width of one token embedding -> family (textual inversion); SDXL stores clip_l (768) + clip_g (1280).
TOKEN_DIMS = {768: "SD 1.x", 1024: "SD 2.x", 64: "tiny-face (workbench test backbone)"}
_TO_K = re.compile(r"attn2[._]to_k(\.weight|\.lora_A\.weight|\.lora\.down\.weight|\.lora_down\.weight"
                   r"|\.lora_linear_layer\.down\.weight)$")


@dataclass(frozen=True)
class FamilyRule:
    name: str
    find: Callable[[SafetensorsHeader], list[tuple[str, str]]]  # -> [(family, reason)]


def _cross_attention(h: SafetensorsHeader) -> list[tuple[str, str]]:
    dims = {t.shape[-1] for k, t in h.tensors.items() if _TO_K.search(k) and len(t.shape) >= 2}
    return [(CROSS_ATTENTION_DIMS[d], f"cross-attention width {d} (attn2.to_k input)")
            for d in sorted(dims) if d in CROSS_ATTENTION_DIMS]


def _text_encoder_width(h: SafetensorsHeader) -> list[tuple[str, str]]:
    """A CLIP text encoder's token-embedding width (SDXL's second encoder, 1280, only comes with SDXL)."""
    dims = {t.shape[-1] for k, t in h.tensors.items() if _TOKEN_EMBEDDING.search(k) and len(t.shape) == 2}
    table = TOKEN_DIMS | {1280: "SDXL"}
    return [(table[d], f"text encoder width {d}") for d in sorted(dims) if d in table]


def _keys(prefixes: tuple[str, ...], family: str, reason: str) -> Callable[[SafetensorsHeader], list]:
    return lambda h: [(family, reason)] if any(p in k for k in h.tensors for p in prefixes) else []


def _ti_width(h: SafetensorsHeader) -> list[tuple[str, str]]:
    if weight_format(h) is None or weight_format(h).name != "textual-inversion":
        return []
    if {"clip_l", "clip_g"} <= set(h.tensors):
        return [("SDXL", "textual inversion for both text encoders (clip_l + clip_g)")]
    dims = {t.shape[-1] for t in h.tensors.values()}
    return [(TOKEN_DIMS[d], f"token embedding width {d}") for d in sorted(dims) if d in TOKEN_DIMS]


_META_FAMILIES = ((re.compile(r"sdxl|stable-diffusion-xl", re.I), "SDXL"), (re.compile(r"flux", re.I), "Flux"),
                  (re.compile(r"sd_v2|stable-diffusion-v2|sd2", re.I), "SD 2.x"),
                  (re.compile(r"sd_v1|stable-diffusion-v1|sd1", re.I), "SD 1.x"))


def _metadata(h: SafetensorsHeader) -> list[tuple[str, str]]:
    out = []
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = h.metadata.get(key, "")
        out += [(fam, f"metadata {key} = {value!r}") for pat, fam in _META_FAMILIES if pat.search(value)][:1]
    if h.metadata.get("ss_v2") == "True":
        out.append(("SD 2.x", "metadata ss_v2 = 'True'"))
    return out


FAMILY_RULES: tuple[FamilyRule, ...] = (
    FamilyRule("cross-attention width", _cross_attention),
    FamilyRule("textual inversion width", _ti_width),
    FamilyRule("text encoder width", _text_encoder_width),
    FamilyRule("SDXL conditioning", _keys(("add_embedding.", "label_emb.", "conditioner.embedders.1"), "SDXL",
                                          "size/crop conditioning or a second text encoder (add_embedding, "
                                          "label_emb, conditioner.embedders.1)")),
    FamilyRule("SDXL second text encoder", _keys(("lora_te2_", "text_encoder_2.", "te2."), "SDXL",
                                                 "weights for a second text encoder (lora_te2_/text_encoder_2)")),
    FamilyRule("Flux blocks", _keys(("double_blocks", "single_blocks", "single_transformer_blocks"), "Flux",
                                    "double- and single-stream transformer blocks")),
    FamilyRule("SD 2.x OpenCLIP", _keys(("cond_stage_model.model.transformer",), "SD 2.x",
                                        "OpenCLIP text encoder (cond_stage_model.model)")),
    FamilyRule("metadata", _metadata),
)


@dataclass
class FamilyGuess:
    family: str  # one family, "ambiguous", or "unknown"
    reasons: list[str]

    def text(self) -> str:
        return f"{self.family} ({'; '.join(self.reasons)})" if self.reasons else self.family


def infer_family(h: SafetensorsHeader) -> FamilyGuess:
    """The base family the weights were made for, with the evidence; "ambiguous" if the evidence disagrees."""
    votes = [v for rule in FAMILY_RULES for v in rule.find(h)]
    families = sorted({f for f, _ in votes})
    reasons = [f"{f}: {r}" if len(families) > 1 else r for f, r in votes]
    if not families:
        return FamilyGuess("unknown", ["no key or shape identifies a base family"])
    return FamilyGuess(families[0] if len(families) == 1 else "ambiguous", reasons)
