"""Ship a pretrained tiny-face: fp16 safetensors + a model card, into the package assets.

``python -m workbench.backbones.ship PRETRAINED_DIR [--dest workbench/backbones/assets/tiny-face]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

CARD = """# tiny-face (headshot privacy workbench base model)

A genuine diffusers `StableDiffusionPipeline` at 64×64 for CPU research on personalisation leakage.
It is **not** a photo-realistic generator: it exists so every workbench code path (LoRA, DreamBooth,
textual inversion, membership inference) runs on a laptop CPU, offline, on the same code as SD 1.5.

| | |
|---|---|
| Architecture | CLIP text encoder 2×64 (frozen at seeded init), AutoencoderKL f=2 (64×64×3 ↔ 32×32×4), UNet2DConditionModel {unet_params:.2f} M params |
| Data | LFW `pretrain.zip`: {n_photos} aligned crops of the people with < 10 photos each (disjoint from every demo, fixture and evaluation person), same intake code as users' photos, horizontal flips |
| Citation for the data | G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, "Labeled Faces in the Wild", UMass TR 07-49, 2007; deep funneling: Huang et al., NIPS 2012. Research use. |
| Training | VAE {vae_steps} steps (batch {vae_batch}), then UNet {unet_steps} steps of batch {batch} (ε-prediction, AdamW lr {lr}, EMA {ema}, caption dropout {cond_drop}), bf16 autocast |
| Hardware | {hardware}, {threads} threads; {minutes:.1f} minutes wall time in all |
| Seed | {seed} |
| Weights | fp16 safetensors ({size_mb:.1f} MB); loads as fp32 with `StableDiffusionPipeline.from_pretrained` |
| Reproduce | `workbench pretrain-base --data ../shared/data/lfw/pretrain.zip --out DIR --unet-steps {unet_steps} --lr {lr} --ema {ema}` then `python -m workbench.backbones.ship DIR` |

## Measured quality ({sampler}, {n} samples)

| | samples | real crops |
|---|---|---|
| Face-detection failure rate (YuNet at 256 px; lower is better; gate < 0.5) | {fdfr_s:.3f} | {fdfr_r:.3f} |
| Diversity: mean pairwise pixel ℓ2 in [0,1] (near the real value is better; the mean face scores ~0) | {div_s:.3f} | {div_r:.3f} |

Quality gate: {gate}.

## Notes
{notes}

## Privacy
Trained only on public LFW news photos of people who are never used as subjects in the workbench.
It can produce face-like images of no particular person; it must not be used to depict real people.
"""


def ship(src: Path, dest: Path, notes: str = "") -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    info = json.loads((src / "pretrain.json").read_text())
    pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    pipe.to(torch.float16)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    size = sum(p.stat().st_size for p in tmp.rglob("*.safetensors")) / 1e6
    cfg, q = info["config"], info["quality"]
    gate_ok = q["fdfr_samples"] < 0.5 and q["diversity_samples"] > 0.5 * q["diversity_real"]
    card = CARD.format(
        unet_params=sum(p.numel() for p in pipe.unet.parameters()) / 1e6, n_photos=info["n_photos"],
        vae_steps=cfg["vae_steps"], vae_batch=cfg.get("vae_batch_size", cfg["batch_size"]),
        unet_steps=info["unet_steps_done"], batch=cfg["batch_size"], lr=cfg["lr"], ema=cfg["ema"],
        cond_drop=cfg["cond_drop"], hardware=info.get("hardware", platform.processor() or "CPU"),
        threads=info["threads"], minutes=info["minutes"], seed=cfg["seed"], size_mb=size,
        sampler=q["sampler"], n=q["n_samples"], fdfr_s=q["fdfr_samples"], fdfr_r=q["fdfr_real"],
        div_s=q["diversity_samples"], div_r=q["diversity_real"],
        gate="passed (FDFR < 0.5 and diversity above half the real value)" if gate_ok else "NOT passed",
        notes=notes or "None.",
    )
    (tmp / "MODEL_CARD.md").write_text(card)
    (tmp / "pretrain.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return {"dest": str(dest), "size_mb": size, "gate_passed": gate_ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src", type=Path)
    ap.add_argument("--dest", type=Path, default=Path(__file__).resolve().parent / "assets" / "tiny-face")
    ap.add_argument("--notes", default="", help="free text for the card's Notes section (e.g. resumed sessions)")
    args = ap.parse_args()
    print(json.dumps(ship(args.src, args.dest, args.notes), indent=1))


if __name__ == "__main__":
    main()
