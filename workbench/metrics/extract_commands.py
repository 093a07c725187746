"""CLI: ``workbench extract`` — FineXtract against any personalised model file, on its own.

    workbench extract --model FILE_OR_DIR --base BACKBONE --train DIR --holdout DIR [--per-photo 50]
        [--steps 50] [--guidance W] [--fix-term K] [--baseline-guidance 3.0] [--prompt TEXT] [--subject ID]
        [--cache DIR] [--encoder sface] [--device auto] [--json]

``--model`` takes what ``workbench mia --model`` takes (:mod:`workbench.modelfile.loading`): a diffusers or
kohya LoRA ``.safetensors``, a textual-inversion embedding, a diffusers pipeline folder (a full
fine-tune), a workbench run or artifact folder, or a ``.tar``/``.zip`` of one; ``--base`` the backbone
it loads on (FineXtract's base branch; required unless the model records it). The caption c is the one
the model records (DONE.json), else ``--prompt``, else "a photo of TOKEN person" for an embedding.
``--train`` holds the photos to look for (the fine-tuning photos, aligned crops as intake writes them),
``--holdout`` other photos of the same person, never trained on: the control. Generations are kept
under ``--cache`` (default: the owner's folder in the workbench store) by content key and registered
for erasure with ``--subject`` or a pseudonymous id, so an interrupted command continues where it
stopped. Definitions: :mod:`workbench.metrics.finextract`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _photos(folder: Path, what: str, required: bool = True) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise UserError(f"--{what} {folder} is not a folder of photos")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if required and not files:
        raise UserError(f"--{what} {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return files


def run_extract(args: argparse.Namespace) -> dict:
    from workbench import paths
    from workbench.device import resolve_device
    from workbench.metrics.finextract import FineXtractParams, run_finextract
    from workbench.modelfile.loading import open_model, owner_id

    train = _photos(args.train, "train")
    holdout = _photos(args.holdout, "holdout", required=False)
    try:
        params = FineXtractParams(guidance=args.guidance, fix_term=args.fix_term, steps=args.steps,
                                  per_photo=args.per_photo, baseline_guidance=args.baseline_guidance,
                                  batch_size=args.batch_size, seed=args.seed)
    except ValueError as exc:
        raise UserError(f"bad FineXtract option: {exc}") from None
    if not args.model.exists():
        raise UserError(f"--model {args.model}: no such file or folder")
    owner = args.subject or owner_id(args.model)
    cache = args.cache or paths.subject_dir(owner) / "extraction"
    with open_model(args.model, owner) as model:  # an archive is checked and extracted once, removed at the end
        result = run_finextract(model, train, holdout, cache, base=args.base, params=params,
                                device=resolve_device(args.device), encoder=args.encoder or None, subject_id=owner,
                                n_resamples=args.resamples, progress=not args.json, caption=args.prompt)
    result |= {"model": model.describe(), "owner": owner}
    return result


def _ci(m: dict) -> str:
    if m.get("value") is None:
        return "n/a"
    if m.get("ci_low") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def summary_table(r: dict) -> str:
    p = r["params"]
    lines = [f"FineXtract on {r['recipe']} (caption {r['caption']!r}): w = {p['w']}, k = {p['k']}, "
             f"{p['steps']} DDIM steps, {p['per_photo']} generations per train photo; plain sampling: cfg "
             f"{p['baseline_guidance']}, same starting latents",
             f"{r['n_train']} train photos, {r['n_holdout']} holdout photos (control); similarity: {r['descriptor']}; "
             f"delta = {r['delta']['registered_l2']} (registered l2)", "",
             f"{'method':<11} {'UNet calls/img':>14}  {'clusters':>8}  {'rate [95% CI]':<24} "
             f"{'avg similarity':<24} {'best reg. l2':<24} {'holdout rate':<24} holdout avg sim"]
    for method, m in r["methods"].items():
        x = m["metrics"]
        lines.append(f"{method:<11} {r['queries_per_image'][method]:>14}  {m['n_clusters']:>8}  {_ci(x['rate']):<24} "
                     f"{_ci(x['avg_similarity']):<24} {_ci(x['best_registered_l2']):<24} "
                     f"{_ci(x['holdout_rate']):<24} {_ci(x['holdout_avg_similarity'])}")
    lines.append("every generation a candidate (no clustering): " + "; ".join(
        f"{method} avg similarity {_ci(m['all_generations']['avg_similarity'])}, best reg. l2 "
        f"{_ci(m['all_generations']['best_registered_l2'])}" for method, m in r["methods"].items()))
    d = r.get("difference")
    if d:
        lines += ["", "paired over train photos (FineXtract vs plain, > 0: FineXtract closer): "
                      f"similarity {_ci(d['avg_similarity'])}, registered l2 {_ci(d['registered_l2'])}, "
                      f"rate {_ci(d['rate'])}; no clustering: similarity {_ci(d['all_generations_avg_similarity'])}"]
    lines.append(f"n = {r['n_train']} train photos; {r['seconds']} s")
    if r.get("owner", "").startswith("model-"):
        lines.append(f"generations registered for erasure with the pseudonymous id {r['owner']} "
                     f"(`workbench erase {r['owner']}`)")
    return "\n".join(lines)


def _extract(args: argparse.Namespace) -> int:
    result = run_extract(args)
    print(json.dumps(result, indent=1, default=str) if args.json else summary_table(result))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("extract", help="FineXtract: extract training photos from a personalised model file",
                       description="Model-guided extraction (FineXtract, Wu et al. ICML 2025) against a personalised "
                                   "model folder and its base, with plain sampling from the same latents as the "
                                   "baseline and holdout photos as the control.")
    p.add_argument("--model", type=Path, required=True, metavar="FILE_OR_DIR",
                   help="a diffusers or kohya LoRA .safetensors, a textual-inversion embedding, a diffusers folder, "
                        "a workbench run/artifact folder or a .tar/.zip of one")
    p.add_argument("--base", help="backbone the model loads on, FineXtract's base branch (default: the one in its "
                                  "DONE.json; required for a vendor's file)")
    p.add_argument("--prompt", help="the training caption c when the model does not record it "
                                    "(e.g. 'a photo of sks person'; {identifier} is filled with a TI token)")
    p.add_argument("--subject", help="the subject id whose manifest the generations are registered in "
                                     "(default: a pseudonymous id of the model file)")
    p.add_argument("--train", type=Path, required=True, help="folder of the fine-tuning photos (aligned crops)")
    p.add_argument("--holdout", type=Path, help="folder of other photos of the person, never trained on (control)")
    p.add_argument("--per-photo", type=int, default=50, help="generations per training photo (default 50)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--guidance", type=float, help="w (default: DreamBooth 3.0, LoRA/TI 5.0)")
    p.add_argument("--fix-term", type=float, help="k (default: DreamBooth -0.02, LoRA/TI 0)")
    p.add_argument("--baseline-guidance", type=float, default=3.0, help="cfg of plain sampling (default 3.0)")
    p.add_argument("--batch-size", type=int, default=16, help="images per UNet call (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latents and bootstrap (default 0)")
    p.add_argument("--encoder", default="sface", help="identity encoder ('' for none; default sface)")
    p.add_argument("--cache", type=Path,
                   help="where generations are kept (default: the owner's folder in the workbench store)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=_extract)
