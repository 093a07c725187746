"""Batched, reproducible sampling from a (personalised) pipeline, through the pipeline's own ``__call__``
(SD 1.x/2.x and SDXL alike: SDXL's pipeline forms its own size/crop conditioning and pooled embeddings).

Every image has its own ``torch.Generator`` seeded from (run seed, prompt group, prompt index, image
index), so an image does not depend on the batch it was drawn in, and the same prompt and seed give
the same starting noise under every recipe (paired comparisons). Images are written atomically as
metadata-free PNGs and registered in the subject's manifest (kind ``generation``); ``records.jsonl``
holds one :class:`GenerationRecord` per image. Images already on disk with a matching record are
reused, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from workbench.errors import UserError
from workbench.lifecycle import manifest

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"
GROUPS = ("identifier", "no_identifier")


@dataclass(frozen=True)
class GenerationRecord:
    file: str  # image file name, relative to the output folder
    recipe: str  # recipe label (e.g. "lora-r8", "none")
    subject_id: str
    prompt: str  # the exact text given to the model
    group: str  # "identifier" (fidelity) or "no_identifier" (concept bleed)
    prompt_index: int  # position of the prompt within its group
    seed: int  # run seed
    image_index: int  # image number for this prompt and seed
    steps: int  # denoising steps
    guidance_scale: float
    sha256: str  # of the PNG file


def image_seed(seed: int, group: str, prompt_index: int, image_index: int) -> int:
    """The per-image generator seed: a hash of where the image sits in the run (63 bits)."""
    digest = hashlib.sha256(f"{seed}/{group}/{prompt_index}/{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def sample_images(pipe, texts: list[str], seeds: list[int], *, steps: int, guidance_scale: float,
                  batch_size: int, progress: bool = True) -> list:
    """``pipe`` on each text with a generator seeded by the matching seed → PIL images, in order."""
    import torch

    from workbench.device import autocast_dtype

    device = pipe.unet.device
    amp = autocast_dtype(device.type)
    images = []
    starts = range(0, len(texts), batch_size)
    for i in tqdm(starts, desc="sampling", unit="batch", disable=not progress or len(starts) < 2):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[i:i + batch_size]]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = pipe(prompt=texts[i:i + batch_size], generator=gens, num_inference_steps=steps,
                       guidance_scale=guidance_scale, output_type="pil")
        images += out.images
    return images


def png_bytes(image) -> bytes:
    """Encode a PIL image as PNG with no metadata."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _prompt_tuple(item) -> tuple[str, str, int]:
    if hasattr(item, "text"):  # workbench.spec.PromptItem
        item = (item.text, item.group, item.index)
    text, group, index = item
    if group not in GROUPS:
        raise ValueError(f"prompt group {group!r} must be one of {GROUPS}")
    return str(text), group, int(index)


def read_records(out_dir: Path) -> list[GenerationRecord]:
    path = Path(out_dir) / RECORDS
    if not path.exists():
        return []
    return [GenerationRecord(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def generate(pipe, prompts: list, seeds: list[int], images_per_prompt: int, steps: int,
             guidance_scale: float, batch_size: int, out_dir: Path, subject_id: str,
             recipe_label: str) -> list[GenerationRecord]:
    """Generate ``images_per_prompt`` images per prompt and seed into ``out_dir``.

    ``prompts``: (text, group, index) tuples or ``spec.PromptItem``s. Returns the records of this
    call, in prompt, seed, image order; ``records.jsonl`` also keeps records of other files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = {r.file: r for r in read_records(out_dir)}
    wanted: list[GenerationRecord] = []
    todo: list[int] = []
    for item in prompts:
        text, group, index = _prompt_tuple(item)
        for seed in seeds:
            for k in range(images_per_prompt):
                name = f"{group}-{index:02d}-seed{seed}-{k:02d}.png"
                rec = GenerationRecord(name, recipe_label, subject_id, text, group, index, seed, k, steps,
                                       float(guidance_scale), "")
                old = existing.get(name)
                if old and asdict(old) | {"sha256": ""} == asdict(rec) and (out_dir / name).exists() \
                        and manifest.sha256_file(out_dir / name) == old.sha256:
                    wanted.append(old)  # already generated with the same settings
                else:
                    todo.append(len(wanted))
                    wanted.append(rec)
    if len({r.file for r in wanted}) != len(wanted):
        raise UserError("two prompts share a (group, index) pair; give each prompt its own index")
    if todo:
        log.info("%s: generating %d images (%d reused)", recipe_label, len(todo), len(wanted) - len(todo))
        texts = [wanted[i].prompt for i in todo]
        seeds_ = [image_seed(wanted[i].seed, wanted[i].group, wanted[i].prompt_index, wanted[i].image_index)
                  for i in todo]
        for start in range(0, len(todo), batch_size):  # write each batch as it comes (resumable)
            chunk = todo[start:start + batch_size]
            images = sample_images(pipe, texts[start:start + batch_size], seeds_[start:start + batch_size],
                                   steps=steps, guidance_scale=guidance_scale, batch_size=batch_size,
                                   progress=False)
            for i, image in zip(chunk, images, strict=True):
                data = png_bytes(image)
                art = manifest.write_bytes(subject_id, "generation", out_dir / wanted[i].file, data)
                wanted[i] = GenerationRecord(**(asdict(wanted[i]) | {"sha256": art.sha256}))
    merged = existing | {r.file: r for r in wanted}
    lines = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in merged.values())
    manifest.write_bytes(subject_id, "record", out_dir / RECORDS, lines.encode())
    return wanted
