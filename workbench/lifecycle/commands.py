"""``workbench purge | erase | verify-erasure | audit-log verify | retention | export | import``."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from workbench.errors import UserError


def _subject(value: str) -> str:
    """argparse type: a valid subject id, or a one-line error."""
    from workbench.paths import check_subject_id

    try:
        return check_subject_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_purge(args) -> int:
    from workbench.lifecycle.retention import purge

    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--now {args.now!r} is not an ISO 8601 time, e.g. 2030-01-31T12:00:00Z") from None
    report = purge(now, dry_run=args.dry_run)
    if args.json:
        print(report.to_json())
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"purge at {report.now}: {verb} {report.files} files ({report.bytes} bytes)")
    for subject, counts in sorted(report.counts.items()):
        print(f"  {subject}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for subject in report.skipped:
        print(f"  {subject}: skipped (an erasure is pending; any workbench command completes it)")
    return 0


def _cmd_erase(args) -> int:
    from workbench.lifecycle.erasure import erase

    receipt = erase(args.subject)
    if args.json:
        print(receipt.to_json())
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(receipt.counts.items())) or "nothing"
        print(f"erased subject {receipt.subject}: {receipt.files_deleted} files ({counts}), "
              f"{receipt.folders_removed} folders, key destroyed: {receipt.key_destroyed}")
        print(f"verification: {'ok' if receipt.verification['ok'] else 'RESIDUAL FILES'}"
              f" — receipt {receipt.receipt_id} in $WORKBENCH_HOME/receipts/")
        print(receipt.to_json())
    return 0 if receipt.verification["ok"] is not False else 1


def _cmd_verify(args) -> int:
    from workbench.lifecycle.verification import verify_erasure

    result = verify_erasure(args.subject)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"subject {args.subject}: {'ok, nothing found' if result['ok'] else 'RESIDUAL'} "
              f"({result['files_scanned']} files scanned, {result['ledger_hashes']} hashes in the ledger)")
        for item in result["residual"]:
            print(f"  [{item['store']}] {item['path']}: {item['reason']}")
        print("not visible to this scan: " + "; ".join(result["cannot_see"]))
    return 0 if result["ok"] else 1


def _cmd_audit_verify(args) -> int:
    from workbench.lifecycle import audit_log

    ok, line, reason = audit_log.verify()
    if args.json:
        print(json.dumps({"ok": ok, "first_bad_line": line, "reason": reason, "path": str(audit_log.log_path())}))
    else:
        print(f"audit log {'ok' if ok else 'TAMPERED'}: " + (reason if ok else f"line {line}: {reason}"))
    return 0 if ok else 1


def _cmd_retention(args) -> int:
    from workbench.lifecycle import audit_log, policy

    current = policy.load_policy(args.subject)
    if args.default_days is not None or args.kind or args.encrypt is not None:
        kinds = dict(current["kinds"])
        for item in args.kind:
            kind, sep, days = item.partition("=")
            if not sep or not days.strip().isdigit():
                raise UserError(f"--kind {item!r}: write KIND=DAYS, e.g. --kind upload=7")
            kinds[kind.strip()] = int(days)
        new = {"default_days": current["default_days"] if args.default_days is None else args.default_days,
               "kinds": kinds, "encrypt": current["encrypt"] if args.encrypt is None else args.encrypt}
        try:
            current = policy.set_retention(args.subject, new)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        audit_log.append("retention", args.subject)
    print(json.dumps(current, indent=1, sort_keys=True))
    return 0


def _model_for(run_dir: Path, label: str, seed: int | None) -> tuple[Path, int | None]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no run.json); pass the folder `workbench run` printed")
    status = json.loads(path.read_text(encoding="utf-8")).get("status", {})
    keys = sorted(k for k in status if k.split("/seed")[0] == label)
    if seed is not None:
        keys = [k for k in keys if k == f"{label}/seed{seed}"]
    if not keys:
        labels = sorted({k.split("/seed")[0] for k in status})
        raise UserError(f"no recipe {label!r} (seed {seed}) in {path}; labels there: {', '.join(labels) or 'none'}")
    if len(keys) > 1:
        raise UserError(f"{label} ran with several seeds ({', '.join(keys)}); choose one with --seed")
    entry = status[keys[0]]
    if not entry.get("ok") or not entry.get("model"):
        raise UserError(f"{keys[0]} did not finish ({entry.get('error', 'no model')}); rerun the spec first")
    return Path(entry["model"]), entry.get("seed")


def _cmd_export(args) -> int:
    from workbench.lifecycle.bundle import export_bundle
    from workbench.lifecycle.sealed import opened

    model, seed = _model_for(args.run_dir, args.label, args.seed)
    with opened(model) as model:  # an encrypted subject's model: its decrypted working copy
        out = export_bundle(model, args.out, run_dir=args.run_dir, label=args.label, seed=seed)
    print(out)
    return 0


def _cmd_import(args) -> int:
    from workbench.lifecycle.bundle import import_bundle

    print(import_bundle(args.bundle, args.subject))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("purge", help="delete every artifact past its retention deadline")
    p.add_argument("--now", help="compare deadlines with this ISO 8601 time instead of the clock")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_purge)

    p = sub.add_parser("erase", help="erase every artifact of a subject in every store; prints the receipt")
    p.add_argument("subject", type=_subject, help="subject id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_erase)

    p = sub.add_parser("verify-erasure", help="scan every store for anything left of a subject (exit 1 if so)")
    p.add_argument("subject", type=_subject, help="subject id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("audit-log", help="the hash-chained audit log")
    p.add_argument("what", choices=["verify"], help="verify: check the chain (exit 1 if tampered)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_audit_verify)

    p = sub.add_parser("retention", help="show or set a subject's retention policy (days per artifact kind)")
    p.add_argument("subject", type=_subject, help="subject id")
    p.add_argument("--default-days", type=int, help="days for kinds without their own setting")
    p.add_argument("--kind", action="append", default=[], metavar="KIND=DAYS", help="e.g. upload=7 (repeatable)")
    p.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=None,
                   help="mark the subject for encryption at rest (see docs/LIFECYCLE.md)")
    p.set_defaults(func=_cmd_retention)

    p = sub.add_parser("export", help="export a run's personalised model as a .tar bundle with a model card")
    p.add_argument("run_dir", type=Path, help="run folder (holds run.json)")
    p.add_argument("label", help="recipe label in the run, e.g. lora")
    p.add_argument("--seed", type=int, default=None, help="which seed, when the recipe ran with several")
    p.add_argument("--out", type=Path, required=True, help="bundle file to write, e.g. model.tar")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="validate and restore a model bundle into a subject's store")
    p.add_argument("bundle", type=Path, help="a .tar made by `workbench export`")
    p.add_argument("--subject", type=_subject, default=None, help="subject id to file it under (default: the bundle's)")
    p.set_defaults(func=_cmd_import)
