"""Data lifecycle: manifest of every derived artifact, retention, erasure, audit log, model bundles.

Where things are: :mod:`.manifest` (what was written, for whom), :mod:`.policy` (how long to keep it),
:mod:`.stores` (where the workbench writes), :mod:`.retention` (purge), :mod:`.erasure` (erase on
request, crash-safe), :mod:`.verification` (the scan), :mod:`.audit_log` (hash chain), :mod:`.keys`
and :mod:`.sealed` (encryption at rest), :mod:`.bundle` (export/import of the model file), :mod:`.commands` (CLI).
See docs/LIFECYCLE.md.
"""


def startup() -> list:
    """Call at the start of every workbench command: completes erasures a crash interrupted and removes the
    plaintext working copies of encrypted subjects that dead processes left (:func:`.sealed.sweep`).

    Cheap when none is pending (two directory listings). Returns the receipts of completed erasures.
    """
    from workbench.lifecycle.erasure import pending_erasures, resume_pending_erasures
    from workbench.lifecycle.sealed import sweep

    sweep()
    return resume_pending_erasures() if pending_erasures() else []
