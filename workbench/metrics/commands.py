"""CLI: ``workbench verify-encoder`` and ``workbench audit``.

    workbench verify-encoder --pairs CSV --root DIR --encoder sface [--calibrate-pairs CSV
        --calibrate-root DIR] [--far 1e-3] [--json]
    workbench audit --train DIR --holdout DIR --generated DIR [--encoder sface ...] [--aligned]
        [--generated-aligned] [--json]

Heavy imports (OpenCV models, dlib) happen only when a command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.errors import UserError


def _verify(args: argparse.Namespace) -> int:
    from workbench.metrics.calibration import verify_encoder

    report = verify_encoder(args.pairs, args.root, args.encoder, args.calibrate_pairs,
                            args.calibrate_root, far=args.far, cache=not args.no_cache)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        std = f" +- {report['accuracy_std']:.4f}" if report.get("accuracy_std") is not None else ""
        far = report["at_far"]
        print(f"{report['encoder']}: accuracy {report['accuracy']:.4f}{std} on {report['n_pairs_scored']} "
              f"pairs ({report['n_pairs_no_face']} without a face), threshold {report['threshold']:.4f}; "
              f"at FAR {far['far_target']:g}: threshold {far['threshold']:.4f}, TAR {far['tar']:.4f} "
              f"(achieved FAR {far['achieved_far']:.2e} on {far['n_negative']} negatives)")
    return 0


def _thresholds(values: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--threshold {item!r}: write ENCODER=VALUE, e.g. arcface=0.32")
    return out


def _audit(args: argparse.Namespace) -> int:
    from workbench.metrics.audit import audit, summary_table

    result = audit(args.train, args.holdout, args.generated, encoders=args.encoder or ["sface"],
                   aligned=args.aligned, thresholds=_thresholds(args.threshold), n_resamples=args.resamples,
                   seed=args.seed, generated_aligned=args.generated_aligned)
    print(json.dumps(result, indent=1) if args.json else summary_table(result))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("verify-encoder", help="LFW-style verification accuracy of an identity encoder",
                       description="Verification accuracy of an identity encoder on a pairs CSV "
                                   "(path_a,path_b,same), and its threshold at a false-accept rate.")
    p.add_argument("--pairs", type=Path, required=True, help="pairs CSV (path_a,path_b,same)")
    p.add_argument("--root", type=Path, required=True, help="folder the CSV's paths are relative to")
    p.add_argument("--encoder", default="sface", help="identity encoder: sface (default), dlib, arcface")
    p.add_argument("--calibrate-pairs", type=Path, help="pairs to choose the threshold on (else 10-fold CV)")
    p.add_argument("--calibrate-root", type=Path, help="root of --calibrate-pairs (default: --root)")
    p.add_argument("--far", type=float, default=1e-3, help="false-accept rate for the threshold (1e-3)")
    p.add_argument("--no-cache", action="store_true", help="do not cache the benchmark photos' embeddings")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_verify)

    a = sub.add_parser("audit", help="image-level identity and memorisation metrics on plain folders",
                       description="Identity fidelity (FDFR, ISM, verification rate) and memorisation "
                                   "(pixel l2, extraction rate, gap) of generated images against a "
                                   "subject's train and holdout photos. No model is needed. Faces in "
                                   "the generated images are detected and aligned exactly like the "
                                   "reference photos', so a vendor's whole-frame headshot that is a "
                                   "training photo is found; --generated-aligned takes them as given.")
    a.add_argument("--train", type=Path, required=True, help="the subject's training photos")
    a.add_argument("--holdout", type=Path, required=True, help="the subject's holdout photos (never trained on)")
    a.add_argument("--generated", type=Path, required=True,
                   help="generated images, any size (e.g. a vendor's headshots): each face is detected and "
                        "aligned like the reference photos'; one without a face counts in FDFR and is "
                        "skipped by memorisation; sub-folders 'identifier' and 'no_identifier' are scored "
                        "as separate prompt groups")
    a.add_argument("--encoder", action="append", metavar="NAME",
                   help="identity encoder, repeatable; the first is the primary (default: sface)")
    a.add_argument("--aligned", action="store_true",
                   help="train/holdout photos are already aligned square crops (skip detection)")
    a.add_argument("--generated-aligned", action="store_true",
                   help="generated images are already square, in the model's framing (a workbench model's "
                        "own samples): take them as given, no detection; whole-frame copies of training "
                        "photos are then NOT found")
    a.add_argument("--threshold", action="append", metavar="ENCODER=VALUE",
                   help="override an encoder's calibrated cosine threshold (e.g. arcface=0.32)")
    a.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    a.add_argument("--json", action="store_true", help="print the full result as JSON")
    a.set_defaults(func=_audit)
