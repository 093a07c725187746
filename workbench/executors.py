"""Where the rows of a run execute: one interface, a registry of executors.

An executor is ``run(spec, out, progress, should_stop, address=None) -> RunOutcome``: it runs every
(person, recipe entry, seed) row of ``spec`` and writes the run folder. Both executors use the same
stage functions (:mod:`workbench.runner`) and the same content keys, so they give the same results.json
and resume the same way:

- ``local`` (default): this process, one row after the other (:func:`workbench.runner.run_local`);
- ``ray``: each row one Ray task on a local Ray or an existing cluster (:mod:`workbench.ray_executor`;
  ``pip install -e '.[ray]'``).

Pick one with the spec's ``execution.executor`` or ``workbench run SPEC --executor ray [--address ADDR]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from workbench.errors import UserError

log = logging.getLogger(__name__)


def _local(spec, out=None, progress=None, should_stop=None, address=None):
    from workbench.runner import run_local

    if address:
        log.warning("the local executor ignores the Ray address %s (use --executor ray)", address)
    return run_local(spec, out, progress, should_stop)


def _ray(spec, out=None, progress=None, should_stop=None, address=None):
    from workbench.ray_executor import run_ray

    return run_ray(spec, out, progress, should_stop, address=address)


EXECUTORS: dict[str, Callable] = {"local": _local, "ray": _ray}


def get_executor(name: str) -> Callable:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise UserError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}") from None
