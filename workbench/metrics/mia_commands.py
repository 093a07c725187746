"""CLI: ``workbench mia`` — membership inference against a trained recipe artifact.

    workbench mia --subject ID --recipe-dir DIR [--attack loss --attack pia ...] [--base NAME]
        [--prompt TEXT] [--with-base] [--seed 0] [--resamples 2000] [--device auto] [--json]

Members are the subject's train photos, non-members its holdout photos (same person). The model is
loaded with :func:`workbench.recipes.artifacts.load_personalised`, exactly as a user would load it.
``--with-base`` runs the same attacks on the untouched base as a control: its AUC should be ≈ 0.5;
when its CI excludes 0.5 the train and holdout photos differ in some way the model can see, and the
fine-tuned model's AUC is not only membership.
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


def run_mia(args: argparse.Namespace) -> dict:
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
    kwargs = dict(attacks=args.attack or ("loss", "pia", "secmi"), seed=args.seed,
                  resolution=args.resolution or done["resolution"], batch_size=args.batch_size,
                  n_resamples=args.resamples, progress=not args.json)
    pipe = load_personalised(args.base, folder, device)
    report = {
        "subject": args.subject, "recipe": done["recipe"], "artifact": str(folder), "prompt": prompt,
        "n_members": len(subject.train), "n_nonmembers": len(subject.holdout),
        "warning": _check_members(folder, subject.train),
        "attacks": membership_inference(pipe, subject.train, subject.holdout, prompt, **kwargs),
    }
    if args.with_base:
        from workbench.backbones.registry import load_backbone

        del pipe
        base = load_backbone(args.base or done["base"], device)
        report["base_control"] = membership_inference(base, subject.train, subject.holdout, prompt, **kwargs)
    return report


def _ci(m: dict) -> str:
    if m["ci_low"] is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def summary_table(report: dict) -> str:
    attacks = report["attacks"]
    first = next(iter(attacks.values()))
    lines = [f"membership inference: recipe {report['recipe']}, subject {report['subject']}, "
             f"{report['n_members']} members (train) vs {report['n_nonmembers']} non-members (holdout), "
             f"prompt {report['prompt']!r}",
             f"space: {first['space']} ({first['space_detail']}); {first['direction']}"]
    if report.get("warning"):
        lines.append(f"WARNING: {report['warning']}")
    header = f"{'model':<6} {'attack':<7} {'queries/img':>11}  {'AUC [95% CI]':<24} {'advantage':<24} TPR@FPR<=1%"
    lines += ["", header]
    for label, key in (("tuned", "attacks"), ("base", "base_control")):
        for name, r in report.get(key, {}).items():
            lines.append(f"{label:<6} {name:<7} {r['queries_per_image']:>11}  {_ci(r['auc']):<24} "
                         f"{_ci(r['advantage']):<24} {_ci(r['tpr_at_1pct_fpr'])}")
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
    p.add_argument("--subject", required=True, help="subject id (members: its train photos; non-members: holdout)")
    p.add_argument("--recipe-dir", type=Path, required=True, help="run folder or artifact folder of a trained recipe")
    p.add_argument("--attack", action="append", choices=sorted(ATTACKS),
                   help="attack to run, repeatable (default: loss, pia, secmi)")
    p.add_argument("--base", help="backbone the artifact loads on (default: the one in DONE.json)")
    p.add_argument("--prompt", help="conditioning prompt (default: the artifact's instance prompt)")
    p.add_argument("--resolution", type=int, help="image size fed to the model (default: the training resolution)")
    p.add_argument("--with-base", action="store_true",
                   help="also attack the untouched base as a control (its AUC should be about 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws and the bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="images per UNet call (default 16)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    p.add_argument("--json", action="store_true", help="print the full result (scores, ROC curve) as JSON")
    p.set_defaults(func=_mia)
