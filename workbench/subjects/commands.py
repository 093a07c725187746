"""``workbench intake``: take a subject's photos in (check, normalise, align, split).

    workbench intake PHOTO_OR_DIR ... --subject ID [--resolution 64] [--holdout-fraction 0.25] [--max-upscale 4]
    workbench intake --demo Colin_Powell --subject demo-01 [--download-lfw] [--json]
    workbench intake ... --protect aspl [--protect-epsilon 0.05] [--protect-rounds 20] [--backbone tiny-face]

With ``--protect`` the accepted training photos also get Anti-DreamBooth-protected copies
(:mod:`workbench.subjects.protect`) against the backbone, for recipes run with ``photos: protected``.

Prints what was accepted (content hash, split) and what was rejected and why, as a table or JSON.
Exits 0 when at least one photo was accepted, else 2. Heavy imports happen only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import UserError

if TYPE_CHECKING:
    from workbench.subjects.intake import IntakeReport


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "intake", help="take a subject's photos in: check, normalise, align, split",
        description="Take a subject's photos in: check, normalise, align, split into train and holdout.")
    p.add_argument("photos", nargs="*", type=Path, metavar="PHOTO_OR_DIR",
                   help="photo files or folders (folders are searched recursively, in sorted order)")
    p.add_argument("--subject", required=True, metavar="ID",
                   help="pseudonymous subject id (letters, digits, '-', '_'), never a person's name")
    p.add_argument("--demo", metavar="NAME", help="add the LFW demo photos of NAME, with their fixed split")
    p.add_argument("--download-lfw", action="store_true",
                   help="with --demo: download LFW (about 110 MB) when no copy is found")
    p.add_argument("--resolution", type=int, default=64, help="crop size in pixels (default 64)")
    p.add_argument("--max-upscale", type=float, default=None, metavar="FACTOR",
                   help="accept faces smaller than the resolution needs (half its width) by enlarging the crop "
                        "(bicubic) at most FACTOR times, e.g. 4 for LFW's 250 px photos at 512 px; recorded "
                        "per photo (default: no upscaling, such photos are rejected)")
    p.add_argument("--holdout-fraction", type=float, default=0.25,
                   help="share of photos held out for evaluation (default 0.25)")
    p.add_argument("--detector", default="yunet", help="face detector: yunet (default, offline) or scrfd")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--protect", choices=("aspl", "fsmg"), default=None,
                   help="also make Anti-DreamBooth-protected copies of the training photos (ASPL or FSMG)")
    p.add_argument("--protect-epsilon", type=float, default=0.05,
                   help="protection budget, L-inf in the model's [-1, 1] pixel scale (default 0.05, ~6/255)")
    p.add_argument("--protect-rounds", type=int, default=20, help="protection rounds (default 20)")
    p.add_argument("--backbone", default="tiny-face", help="the model the protection is computed against")
    p.add_argument("--device", default="auto", help="device for the protection: auto, cpu, cuda, mps")
    p.set_defaults(func=run_intake)


def _printable(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name)


def _table(report: IntakeReport) -> str:
    r = report
    lines = [f"subject {r.subject_id} (resolution {r.resolution}): {len(r.accepted)} accepted, "
             f"{len(r.rejected)} rejected; now {r.train} train, {r.holdout} holdout"]
    for acc in report.accepted:
        note = "" if acc.new else "  (already taken in)"
        note += f"  (upscaled {acc.upscale:.1f}x)" if acc.upscale else ""
        lines.append(f"  accepted  {acc.split:<8} {acc.sha256[:12]}  {_printable(acc.source)}{note}")
    for rej in report.rejected:
        lines.append(f"  rejected  {_printable(rej.source)}: {rej.reason}")
    return "\n".join(lines)


def run_intake(args: argparse.Namespace) -> int:
    from workbench import paths
    from workbench.lifecycle.erasure import working_on
    from workbench.subjects.intake import intake

    protection = _protect_params(args) if args.protect else None  # a bad option fails before any work
    upscale = _upscale_params(args)
    sources: list[Path] = list(args.photos)
    splits: dict[str, str] = {}
    if args.demo:
        from workbench.subjects.demo import demo_photos, ensure_lfw

        ensure_lfw(download=args.download_lfw)
        for path, split in demo_photos(args.demo):
            sources.append(path)
            splits[str(path)] = split
    elif args.download_lfw:
        raise UserError("--download-lfw only goes with --demo NAME")
    if not sources:
        raise UserError("nothing to take in: give photo files or folders, or --demo NAME")
    try:
        paths.check_subject_id(args.subject)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with working_on(args.subject, must_exist=False):  # an encrypted subject: its decrypted working copy
        report = intake(sources, args.subject, resolution=args.resolution, holdout_fraction=args.holdout_fraction,
                        splits=splits or None, detector=args.detector, upscale=upscale)
        print(report.to_json() if args.json else _table(report))
        if protection and report.accepted:
            print(_protect(args, protection), file=sys.stderr if args.json else sys.stdout)
    if not report.accepted:
        print(f"error: no photo was accepted for subject {args.subject}; see the reasons above, "
              "fix or replace the photos and run intake again", file=sys.stderr)
        return 2
    return 0



def _upscale_params(args: argparse.Namespace):
    from pydantic import ValidationError

    from workbench.subjects.upscale import UpscaleParams

    if args.max_upscale is None:
        return None
    try:
        return UpscaleParams(max_factor=args.max_upscale)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise UserError(f"--max-upscale: {msg} (a factor above 1, at most 8), got {args.max_upscale:g}") from None


def _protect_params(args: argparse.Namespace):
    from pydantic import ValidationError

    from workbench.subjects.protect import ProtectParams

    try:
        return ProtectParams(method=args.protect, epsilon=args.protect_epsilon, rounds=args.protect_rounds)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"--protect-{str(err['loc'][0]).replace('_', '-')}: {msg}") from None


def _protect(args: argparse.Namespace, params) -> str:
    from workbench.device import resolve_device
    from workbench.lifecycle.sealed import at_rest
    from workbench.subjects.protect import protect_subject
    from workbench.subjects.store import load_subject

    done = protect_subject(load_subject(args.subject), args.backbone, params, resolve_device(args.device))
    psnr = done.report["psnr_db"]
    cost = ("no photo changed" if psnr["value"] is None else
            f"PSNR {psnr['value']:.1f} dB [{psnr['ci_low']:.1f}, {psnr['ci_high']:.1f}]")
    return (f"protected {done.report['n']} training photos ({params.method}, epsilon {params.epsilon}): "
            f"{cost}, largest change {done.report['linf_levels']} of 255 levels; in {at_rest(done.paths[0].parent)}")
