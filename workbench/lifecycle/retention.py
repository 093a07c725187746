"""Retention: :func:`purge` deletes every artifact whose deadline has passed, for every subject.

A deadline is ``created + days_for(kind)`` under the subject's policy in force (:mod:`.policy`; 30
days for all kinds when the subject has none). Each deleted file gets a tombstone line in its
subject's manifest, so its hash stays listed for verification, and the purge is audit-logged.

When a weights file inside a finished model folder expires, the folder's ``DONE.json`` is deleted
first, so the half-deleted model is never mistaken for a result (the engine retrains it on request).
Files outside every store are deleted only if they still hold the registered bytes. Subjects with a
pending erasure are left to it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from workbench import paths
from workbench.lifecycle import audit_log, manifest, policy, stores

DONE = "DONE.json"


@dataclass
class PurgeReport:
    now: str  # ISO 8601 UTC: the clock the deadlines were compared with
    dry_run: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # subject -> kind -> files deleted
    deleted: list[dict] = field(default_factory=list)  # [{subject, kind, sha256, size}]
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # subjects left alone (erasure pending)

    @property
    def files(self) -> int:
        return len(self.deleted)

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"files": self.files}, indent=1, sort_keys=True)


def _timestamp(now: datetime | None) -> float:
    if now is None:
        return datetime.now(timezone.utc).timestamp()
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)  # a naive time is taken as UTC
    return now.timestamp()


def subjects() -> list[str]:
    root = paths.subjects_root()
    return sorted(p.parent.name for p in root.glob("*/manifest.jsonl")) if root.is_dir() else []


def purge(now: datetime | None = None, dry_run: bool = False) -> PurgeReport:
    """Delete every artifact whose deadline is before ``now`` (default: the current time)."""
    t = _timestamp(now)
    report = PurgeReport(datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z"), dry_run)
    for subject_id in subjects():
        if paths.erasure_journal(subject_id).exists():
            report.skipped.append(subject_id)
            continue
        counts = _purge_subject(subject_id, t, dry_run, report)
        if counts:
            report.counts[subject_id] = dict(counts)
            if not dry_run:
                audit_log.append("purge", subject_id, count=sum(counts.values()))
    return report


def _purge_subject(subject_id: str, t: float, dry_run: bool, report: PurgeReport) -> Counter:
    live = manifest.live(subject_id)
    by_path = {manifest.resolve(a.path): a for a in live}
    expired = [a for a in live if a.expires < t]
    counts: Counter = Counter()
    touched: set[Path] = set()

    def delete(art: manifest.Artifact, reason: str) -> None:
        path = manifest.resolve(art.path)
        if not path.is_file():
            if not dry_run:
                manifest.tombstone(subject_id, art, "missing")
            return
        digest, size = manifest.sha256_file(path), path.stat().st_size
        if stores.store_of(path) is None and digest != art.sha256:
            return  # outside the stores and no longer what was registered: not ours to delete
        counts[art.kind] += 1
        report.deleted.append({"subject": subject_id, "kind": art.kind, "sha256": digest, "size": size})
        report.bytes += size
        if not dry_run:
            path.unlink()
            manifest.tombstone(subject_id, art, reason, sha256=digest, size=size)
            touched.add(path.parent)

    done_markers = {}
    for art in expired:
        marker = manifest.resolve(art.path).parent / DONE
        if marker in by_path and by_path[marker] not in expired:
            done_markers[marker] = by_path[marker]
    expired.sort(key=lambda a: Path(a.path).name != DONE)  # stable: DONE.json markers first
    for art in list(done_markers.values()) + expired:  # invalidate models first, then delete
        delete(art, "retention")
    rules = policy.load_policy(subject_id)
    gone = {manifest.resolve(a.path) for a in expired}
    for line in manifest.folders(subject_id):  # folders registered whole (W&B runs): what was added later
        folder = manifest.resolve(line["path"])
        if not folder.is_dir() or policy.deadline(rules, line["kind"], line["created"]) >= t \
                or stores.is_protected(folder):
            continue
        left = [p for p in folder.rglob("*") if p.is_file() and p not in gone]
        counts[line["kind"]] += len(left)
        report.deleted += [{"subject": subject_id, "kind": line["kind"], "sha256": manifest.sha256_file(p),
                            "size": p.stat().st_size} for p in left]
        report.bytes += sum(p.stat().st_size for p in left)
        if not dry_run:
            shutil.rmtree(folder)
            touched.add(folder.parent)
    for folder in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        stores.prune_empty(folder)
    return counts
