"""CLI: ``workbench mia`` — membership inference against a trained recipe artifact.

    workbench mia --subject ID --recipe-dir DIR [--attack loss --attack pia ...] [--base NAME]
        [--prompt TEXT] [--no-calibration] [--with-base] [--seed 0] [--resamples 2000] [--device auto] [--json]
    workbench mia --model FILE_OR_DIR --base ID_OR_DIR (--subject ID | --train DIR --holdout DIR) --prompt TEXT ...

Members are the subject's train photos, non-members its holdout photos (same person); with ``--model``
and no subject, the photos of ``--train`` and ``--holdout`` (plain folders of aligned crops). A run
folder is loaded with :func:`workbench.recipes.artifacts.load_personalised`, exactly as a user would
load it; ``--model`` takes a vendor's file (a diffusers or kohya LoRA, a textual-inversion embedding, a
diffusers folder or a ``.tar`` of one) and loads it on ``--base`` with diffusers' own loaders
(:mod:`workbench.modelfile.loading`), refusing a base of another family.
The attacks are difficulty-calibrated by default (Watson et al. 2022): every photo is also scored on
the untouched base (same noise draws) and the difference is attacked; ``--no-calibration`` attacks
the raw scores. ``--with-base`` also reports the base's *raw* AUCs as a control: their p-values
should not be small; when they are, the train and holdout photos differ in some way the model can
see, and the fine-tuned model's raw AUC is not only membership.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from workbench.errors import UserError

log = logging.getLogger(__name__)


def _check_members(run_dir: Path, train: list[Path]) -> str | None:
    """A warning if the run's job.json lists other training images than the subject's train split."""
    from workbench.lifecycle import manifest
    from workbench.recipes.engine import JOB

    job_file = run_dir.parent / JOB
    if not job_file.is_file():
        return None
    trained = json.loads(job_file.read_text(encoding="utf-8")).get("train_images", [])
    if sorted(trained) != sorted(manifest.sha256_file(p) for p in train):
        return (f"the run in {run_dir.parent} trained on {len(trained)} images that are not exactly the subject's "
                f"{len(train)} train photos: 'members' below are not the training set")
    return None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _photos(folder: Path | None, what: str) -> list[Path]:
    if folder is None or not Path(folder).is_dir():
        raise UserError(f"--{what} {folder} is not a folder of photos (aligned crops, e.g. a subject's crops/)")
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--{what} {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _members(args: argparse.Namespace) -> tuple[list[Path], list[Path], str]:
    """(members, non-members, whose) for ``--model``: the subject's split, or the two folders."""
    if args.subject and (args.train or args.holdout):
        raise UserError("give --subject (its train/holdout photos) or --train DIR --holdout DIR, not both")
    if args.subject:
        from workbench.subjects.store import load_subject

        subject = load_subject(args.subject)
        if not subject.holdout:
            raise UserError(f"subject {args.subject!r} has no holdout photos: intake with --holdout-fraction > 0")
        return subject.train, subject.holdout, args.subject
    if not (args.train and args.holdout):
        raise UserError("with --model, say whose photos to test: --subject ID, or --train DIR (the photos the "
                        "model was trained on) and --holdout DIR (other photos of the person, never trained on)")
    return _photos(args.train, "train"), _photos(args.holdout, "holdout"), "photos"


def run_model_mia(args: argparse.Namespace) -> dict:
    """Membership inference against a vendor's model file on its own base (``--model``)."""
    from workbench.backbones.registry import backbone_resolution, load_backbone
    from workbench.device import resolve_device
    from workbench.metrics.membership import DEFAULT_ATTACKS, attack_scores, membership_inference
    from workbench.modelfile.loading import check_family, load_model, open_model

    members, nonmembers, whose = _members(args)
    device = resolve_device(args.device)
    with open_model(args.model, args.subject) as model:
        done = model.done or {}
        ident = model.identifier
        prompt = args.prompt or done.get("instance_prompt") or (f"a photo of {ident} person" if ident else None)
        if not prompt:
            raise UserError(f"--model {model.path.name} does not say what caption it was trained with: pass --prompt "
                            "(e.g. 'a photo of sks person'; a kohya file's ss_tag_frequency, shown by "
                            "`workbench inspect`, often names the trigger word)")
        prompt = prompt.replace("{identifier}", ident or "{identifier}")
        base_name = args.base or done.get("base")
        if not base_name and model.kind != "pipeline":
            raise UserError(f"--model {model.path.name} holds only {model.kind} weights ({model.family}): pass the "
                            "base it was trained on with --base (a backbone name, diffusers folder or hub id)")
        if not base_name and not args.no_calibration:
            raise UserError("calibration scores every photo on the untouched base: pass --base, or --no-calibration")
        resolution = args.resolution or done.get("resolution") or backbone_resolution(base_name or str(model.folder))
        kwargs = dict(attacks=args.attack or DEFAULT_ATTACKS, seed=args.seed, resolution=resolution,
                      batch_size=args.batch_size, n_resamples=args.resamples, progress=not args.json)
        if args.base:
            check_family(model, args.base)  # from configs: a wrong base fails before anything is loaded
        reference = None
        if not args.no_calibration:
            plain = prompt.replace(ident, ident.strip("<>")) if ident else prompt  # the base has no learned token
            base = load_backbone(base_name, device)
            reference = attack_scores(base, members + nonmembers, plain, kwargs["attacks"], args.seed, resolution,
                                      args.batch_size)
            del base
        pipe = load_model(model, args.base, device)
        report = {
            "subject": whose, "recipe": done.get("recipe") or model.kind, "artifact": str(model.path),
            "model": model.describe(), "base": base_name, "prompt": prompt,
            "n_members": len(members), "n_nonmembers": len(nonmembers), "warning": None,
            "calibrated": reference is not None,
            "attacks": membership_inference(pipe, members, nonmembers, prompt, reference=reference, **kwargs),
        }
        if args.with_base:
            del pipe
            base = load_backbone(base_name, device)
            report["base_control"] = membership_inference(base, members, nonmembers, prompt, **kwargs)
    return report


def run_mia(args: argparse.Namespace) -> dict:
    if getattr(args, "model", None) is not None:
        if args.recipe_dir is not None:
            raise UserError("give --recipe-dir (a workbench run) or --model (any model file), not both")
        return run_model_mia(args)
    if args.recipe_dir is None or not args.subject:
        raise UserError("say what to attack: --subject ID --recipe-dir DIR (a workbench run), or --model FILE "
                        "--base ID (a vendor's model file) with --subject or --train/--holdout")
    if getattr(args, "train", None) or getattr(args, "holdout", None):
        raise UserError("--train/--holdout go with --model; a run's members are its subject's train photos")
    from workbench.device import resolve_device
    from workbench.metrics.membership import membership_inference
    from workbench.recipes.artifacts import artifact_dir, load_personalised, read_done
    from workbench.subjects.store import load_subject

    folder = artifact_dir(args.recipe_dir)
    done = read_done(folder)
    if done["subject_id"] != args.subject:
        raise UserError(f"{folder} was trained for subject {done['subject_id']!r}, not {args.subject!r}; "
                        "membership needs the subject whose photos trained it")
    subject = load_subject(args.subject)
    if not subject.holdout:
        raise UserError(f"subject {args.subject!r} has no holdout photos: intake with --holdout-fraction > 0")
    device = resolve_device(args.device)
    prompt = args.prompt or done["instance_prompt"]
    from workbench.metrics.membership import DEFAULT_ATTACKS

    kwargs = dict(attacks=args.attack or DEFAULT_ATTACKS, seed=args.seed,
                  resolution=args.resolution or done["resolution"], batch_size=args.batch_size,
                  n_resamples=args.resamples, progress=not args.json)
    base_name = args.base or done["base"]
    reference = None
    if not args.no_calibration:
        from workbench.backbones.registry import load_backbone
        from workbench.metrics.membership import attack_scores

        plain = prompt.replace(done["identifier"], done["identifier"].strip("<>"))  # the base has no learned token
        base = load_backbone(base_name, device)
        reference = attack_scores(base, subject.train + subject.holdout, plain, kwargs["attacks"], args.seed,
                                  kwargs["resolution"], args.batch_size)
        del base
    pipe = load_personalised(args.base, folder, device)
    report = {
        "subject": args.subject, "recipe": done["recipe"], "artifact": str(folder), "prompt": prompt,
        "n_members": len(subject.train), "n_nonmembers": len(subject.holdout),
        "warning": _check_members(folder, subject.train),
        "calibrated": reference is not None,
        "attacks": membership_inference(pipe, subject.train, subject.holdout, prompt, reference=reference, **kwargs),
    }
    if args.with_base:
        from workbench.backbones.registry import load_backbone

        del pipe
        base = load_backbone(base_name, device)
        report["base_control"] = membership_inference(base, subject.train, subject.holdout, prompt, **kwargs)
    return report


def _ci(m: dict) -> str:
    if m["value"] is None:
        return "n/a"
    text = f"{m['value']:.3f}" if m["ci_low"] is None else f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
    return text + (f" p={m['p_value']:.3g}" if m.get("p_value") is not None else "")


def summary_table(report: dict) -> str:
    attacks = report["attacks"]
    first = next(iter(attacks.values()))
    lines = [f"membership inference: recipe {report['recipe']}, subject {report['subject']}, "
             f"{report['n_members']} members (train) vs {report['n_nonmembers']} non-members (holdout), "
             f"prompt {report['prompt']!r}",
             f"space: {first['space']} ({first['space_detail']}); {first['direction']}"]
    if report.get("warning"):
        lines.append(f"WARNING: {report['warning']}")
    header = (f"{'model':<6} {'attack':<7} {'queries/img':>11}  {'AUC [95% CI] p':<34} {'raw AUC':<34} "
              f"{'advantage':<34} TPR@FPR<=1%")
    lines += ["", header]
    for label, key in (("tuned", "attacks"), ("base", "base_control")):
        for name, r in report.get(key, {}).items():
            lines.append(f"{label:<6} {name:<7} {r['queries_per_image']:>11}  {_ci(r['auc']):<34} "
                         f"{_ci(r['auc_raw']):<34} {_ci(r['advantage']):<34} {_ci(r['tpr_at_1pct_fpr'])}")
    lines += ["", f"note: {first['notes']['auc']}", f"note: TPR@FPR<=1%: {first['notes']['tpr_at_1pct_fpr']}"]
    return "\n".join(lines)


def _mia(args: argparse.Namespace) -> int:
    report = run_mia(args)
    print(json.dumps(report, indent=1) if args.json else summary_table(report))
    return 0


def add_commands(sub) -> None:
    from workbench.metrics.membership import ATTACKS

    p = sub.add_parser("mia", help="membership inference (loss, PIA, SecMI) against a trained recipe",
                       description="White-box membership inference against a personalised model: can an "
                                   "attacker tell the subject's training photos from their holdout photos? "
                                   "Reports ROC AUC, attacker advantage and TPR at FPR<=1% with 95% CIs.")
    p.add_argument("--subject", help="subject id (members: its train photos; non-members: holdout)")
    p.add_argument("--recipe-dir", type=Path, help="run folder or artifact folder of a trained recipe")
    p.add_argument("--model", type=Path, metavar="FILE_OR_DIR",
                   help="instead of --recipe-dir: a vendor's model file — a diffusers or kohya LoRA .safetensors, a "
                        "textual-inversion embedding, a diffusers folder or a .tar/.zip of one — loaded on --base")
    p.add_argument("--train", type=Path, metavar="DIR",
                   help="with --model and no --subject: the photos the model was trained on (aligned crops)")
    p.add_argument("--holdout", type=Path, metavar="DIR",
                   help="with --model and no --subject: other photos of the person, never trained on")
    p.add_argument("--attack", action="append", choices=sorted(ATTACKS),
                   help="attack to run, repeatable (default: every registered attack)")
    p.add_argument("--base", help="backbone the model loads on (default: the one in DONE.json; required for a "
                                  "vendor's LoRA or embedding: its family must match the file's)")
    p.add_argument("--prompt", help="conditioning prompt (default: the artifact's instance prompt)")
    p.add_argument("--resolution", type=int, help="image size fed to the model (default: the training resolution)")
    p.add_argument("--no-calibration", action="store_true",
                   help="attack the raw scores (default: difficulty-calibrated against the untouched base)")
    p.add_argument("--with-base", action="store_true",
                   help="also attack the untouched base as a control (its raw AUC p-values should not be small)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws and the bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="images per UNet call (default 16)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    p.add_argument("--json", action="store_true", help="print the full result (scores, ROC curve) as JSON")
    p.set_defaults(func=_mia)
