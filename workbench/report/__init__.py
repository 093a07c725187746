"""The privacy-risk report of a run: scorecard, risk grades, figures and a self-contained HTML page.

- the ``results.json`` schema the runner writes lives in :mod:`workbench.results` (:func:`validate_results`,
  :func:`load_results`, re-exported here);
- :mod:`.scorecard`: rows → table data, risk grades and sample-size notes (pure functions);
- :mod:`.plots`: frontier, ROC and distance figures as PNG bytes;
- :mod:`.html`: :func:`write_report` → ``run_dir/report.html``;
- :mod:`.commands`: ``workbench report RUN_DIR``.
"""

from workbench.results import load_results, validate_results

__all__ = ["load_results", "validate_results", "write_report"]


def write_report(run_dir):
    """See :func:`workbench.report.html.write_report` (imported lazily: it pulls in matplotlib)."""
    from workbench.report.html import write_report as _write

    return _write(run_dir)
