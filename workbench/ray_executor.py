"""The Ray executor: every (person, recipe entry, seed) row of a spec is one Ray task.

Layout of a run:

1. the driver (this process) connects to Ray (``address``; none: a local Ray on 127.0.0.1 with no
   dashboard and no usage stats), writes a marker file into ``$WORKBENCH_HOME`` and the run folder, and
   starts a small state actor (progress lines, the stop flag) on its own node;
2. one *preparation* task per person (intake, split, protected photos:
   :func:`workbench.runner.prepare_person`); it returns the split (photo hashes);
3. as soon as a person is prepared, one *row* task per recipe entry × seed: it reads the person back
   (:func:`workbench.runner.load_person`, nothing written) and runs :func:`workbench.runner.run_row`
   (train or reuse the content-keyed model, resuming from its last checkpoint; generate what is missing;
   measure or reuse metrics.json). It returns the row (metrics, paths, params): small records only.
   Models and images are written under ``$WORKBENCH_HOME`` and the run folder, as locally; on a
   multi-node cluster both must be one shared file system, mounted at the same path on every node:
   every task checks the driver's marker first and fails the run clearly when it cannot see it;
4. the driver writes spec.json, split.json, run.json, results.json (pooled statistics for a cohort) and
   the report (:func:`workbench.runner._results`, :func:`workbench.runner.publish`), as locally.

Resources per task: ``execution.resources`` (``num_cpus``, default 1; ``num_gpus``, default 0 for
tiny-face or ``device: cpu``, else 1). ``execution.max_retries`` (default 3): Ray reruns a task whose
worker or node died (a system failure); the rerun resumes training from the checkpoint on the shared
store. A recipe's own error is a recorded failed row, as locally, and is not retried.

Cancel (``should_stop()``, or Ctrl-C once): the stop flag is set, every running task stops at its next
training step (checkpointed), tasks not started yet return at once, and :class:`Interrupted` is raised;
a second Ctrl-C cancels every task by force. A rerun does only the missing work.

Test hooks (``WORKBENCH_TEST_HOOKS=1``, set on a node): ``WORKBENCH_TEST_CHECKPOINT_EVERY=<n>`` checkpoints
every n steps, ``WORKBENCH_TEST_STEP_DELAY=<seconds>`` sleeps after each training step.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from pathlib import Path

from workbench import paths
from workbench.errors import Interrupted, UserError

log = logging.getLogger(__name__)

MARKER = ".workbench-ray-check"
POLL_SECONDS = 1.0  # how often a task asks the driver whether to stop (between training steps)


class SharedStorageError(UserError):
    """A Ray worker does not see the driver's $WORKBENCH_HOME or run folder (not a shared file system)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install -e '.[ray]'  (or use --executor local)") from None
    return ray


def task_resources(spec) -> dict:
    """What each task asks for: the spec's ``execution.resources``; by default a GPU for SD-class backbones."""
    res = spec.execution.resources
    gpus = res.num_gpus
    if gpus is None:
        gpus = 0 if spec.backbone == "tiny-face" or spec.device in ("cpu", "mps") else 1
    return {"num_cpus": res.num_cpus, "num_gpus": gpus} | ({"resources": dict(res.custom)} if res.custom else {})


def connect(address: str | None) -> bool:
    """Connect to Ray; True when this call started it (and the caller shuts it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
    if address is None:  # a local Ray: every service on loopback, no dashboard
        _loopback_only()
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, configure_logging=False)
    else:
        ray.init(address=address, configure_logging=False)
    return True


def _loopback_only() -> None:
    """Keep a single-machine Ray on 127.0.0.1. On Linux, Ray 2.x rewrites 127.0.0.1 to the host's routable
    address (services.resolve_ip_for_localhost) and its gRPC servers then bind 0.0.0.0; with
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 it keeps the loopback address, as on a laptop."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by `ray start` and processes importing ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # this process imported ray already: the constant, read at call time


def _check_resources(ray, spec, res: dict) -> dict:
    total = ray.cluster_resources()
    if res["num_gpus"] and total.get("GPU", 0) < res["num_gpus"]:
        if spec.device == "auto" and spec.execution.resources.num_gpus is None:
            log.warning("the Ray cluster has no GPU: the rows run on CPUs (device auto)")
            return res | {"num_gpus": 0}
        raise UserError(f"each task asks for {res['num_gpus']} GPU(s) but the Ray cluster has "
                        f"{total.get('GPU', 0):g}: add GPU nodes, or set execution.resources.num_gpus: 0")
    for name, amount in res.get("resources", {}).items():
        if total.get(name, 0) < amount:
            raise UserError(f"each task asks for {amount:g} of the custom resource {name!r}, which no node of the "
                            "Ray cluster offers (execution.resources.custom)")
    if total.get("CPU", 0) < res["num_cpus"]:
        raise UserError(f"each task asks for {res['num_cpus']:g} CPU(s) but the Ray cluster has "
                        f"{total.get('CPU', 0):g}: lower execution.resources.num_cpus")
    return res


# ---------------------------------------------------------------------------------------------------
# In the tasks

class _RunState:
    """The run's shared state, an actor on the driver's node: the stop flag and each running task's line."""

    def __init__(self):
        self.stopped = False
        self.running: dict[int, dict] = {}

    def stop(self) -> None:
        self.stopped = True

    def is_stopped(self) -> bool:
        return self.stopped

    def report(self, job: int, text: str, node: str) -> None:
        line = self.running.setdefault(job, {"since": time.time()})
        line.update(text=text, node=node)

    def finished(self, job: int) -> None:
        self.running.pop(job, None)

    def snapshot(self) -> dict:
        return {"stopped": self.stopped, "running": dict(self.running)}


def _setup_worker(ctx: dict) -> str:
    """Point the worker at the driver's data root (same path) and check it is the same storage: the
    driver's marker must be there, in $WORKBENCH_HOME and in the run folder."""
    os.environ["WORKBENCH_HOME"] = ctx["home"]  # the driver's path: the same mount on every node
    node = socket.gethostname()
    for where, folder in (("$WORKBENCH_HOME", paths.home()), ("the run folder", Path(ctx["run_dir"]))):
        marker = folder / MARKER
        try:
            seen = marker.read_text(encoding="utf-8")
        except OSError:
            seen = None
        if seen != ctx["token"]:
            raise SharedStorageError(
                f"Ray worker on {node} does not see the driver's files in {where} ({folder}): "
                "$WORKBENCH_HOME and the run folder must be one shared file system (NFS, a CSI volume, ...) "
                "mounted at the same path on every node; see the README, 'Running on Ray'")
    return node


def _stop_poll(state, ray):
    """``should_stop`` for the engine: the driver's stop flag, asked at most every POLL_SECONDS."""
    hooks = os.environ.get("WORKBENCH_TEST_HOOKS") == "1"
    delay = float(os.environ.get("WORKBENCH_TEST_STEP_DELAY", 0)) if hooks else 0.0
    last = {"t": 0.0, "stop": False}

    def should_stop() -> bool:
        if delay:
            time.sleep(delay)
        if time.monotonic() - last["t"] >= POLL_SECONDS:
            try:
                last["stop"] = ray.get(state.is_stopped.remote(), timeout=30)
            except ray.exceptions.ActorUnavailableError:
                pass  # the state actor is briefly unreachable (e.g. while a lost node is handled): ask again later
            except Exception:  # noqa: BLE001 - the driver is gone: nobody will collect this row
                last["stop"] = True
            last["t"] = time.monotonic()
        return last["stop"]

    return should_stop


def _job_args() -> dict:
    if os.environ.get("WORKBENCH_TEST_HOOKS") == "1" and os.environ.get("WORKBENCH_TEST_CHECKPOINT_EVERY"):
        return {"checkpoint_every": int(os.environ["WORKBENCH_TEST_CHECKPOINT_EVERY"])}
    return {}


def _prepare_task(spec, k: int, ctx: dict, state) -> dict:
    """Per-person preparation (intake, split, protected photos), once per person."""
    import ray

    from workbench.device import resolve_device
    from workbench.runner import prepare_person

    node = _setup_worker(ctx)
    sub = spec.subjects()[k]
    if ray.get(state.is_stopped.remote()):
        return {"interrupted": "stopped before it started"}
    try:
        person = prepare_person(spec, sub, resolve_device(spec.device),
                                lambda text, frac: state.report.remote(-1 - k, text, node))
    except Interrupted as exc:
        return {"interrupted": str(exc)}
    finally:
        state.finished.remote(-1 - k)
    return {"subject": sub.id, "split": person.split, "node": node}


def _row_task(spec, job: int, k: int, e: int, seed: int, split, ctx: dict, state) -> dict:
    """One (person, recipe entry, seed) row; returns the row and its status, never a model or an image."""
    import ray

    from workbench.device import resolve_device
    from workbench.lifecycle import sealed
    from workbench.lifecycle.erasure import working_on
    from workbench.runner import RunOutcome, load_person, row_dir, row_name, run_row, train_job

    node = _setup_worker(ctx)
    node_id = ray.get_runtime_context().get_node_id()
    if ray.get(state.is_stopped.remote()):
        return {"interrupted": "stopped before it started"}
    sub, entry = spec.subjects()[k], spec.recipes[e]
    run_dir, owners = Path(ctx["run_dir"]), [s.id for s in spec.subjects()]
    name = row_name(spec, sub.id, entry, seed)
    device = resolve_device(spec.device)
    try:
        with working_on(sub.id):  # one working copy of an encrypted person for the whole row (lifecycle/sealed.py)
            state.report.remote(job, f"{name}: loading the person", node)
            person = load_person(spec, sub, split, device)
            model = sealed.pull(train_job(spec, entry, person.subject, seed, device, person.protected).out_dir)
            steps = sorted(int(p.name.split("-")[1]) for p in (model / "checkpoint").glob("step-*"))
            outcome = RunOutcome(run_dir, spec.run_subject_id)
            row = run_row(spec, entry, seed, person, device, run_dir, row_dir(spec, run_dir, sub.id, entry, seed), name,
                          outcome, owners, _stop_poll(state, ray),
                          lambda text, frac: state.report.remote(job, text, node), **_job_args())
    except Interrupted as exc:
        return {"interrupted": f"{name}: {exc}"}
    finally:
        state.finished.remote(job)
    status = outcome.status[name] | {"node": node, "node_id": node_id,
                                     "resumed_from_step": steps[-1] if steps else None}
    return {"row": row, "status": status, "device": device}


# ---------------------------------------------------------------------------------------------------
# In the driver

def progress_lines(counts: dict, running: dict, now: float | None = None) -> list[str]:
    """Overall counts, then one line per running task (its stage, node and time so far)."""
    now = time.time() if now is None else now
    lines = [f"rows: {counts['done']} done, {counts['running']} running, {counts['failed']} failed, "
             f"{counts['left']} left (of {counts['total']})"]
    for _, line in sorted(running.items()):
        lines.append(f"  {line.get('text', '…')}  [{line.get('node', '?')}, {now - line['since']:.0f} s]")
    return lines


def run_ray(spec, out=None, progress=None, should_stop=None, address=None):
    import torch

    from workbench.runner import (
        RunOutcome,
        _results,
        _run_record,
        default_run_dir,
        publish,
        write_owned,
    )

    ray = _import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    report_progress = progress or (lambda stage, frac: None)
    run_dir = (Path(out) if out else default_run_dir(spec)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    people = spec.subjects()
    owners = [sub.id for sub in people]
    jobs = [(k, e, seed) for k in range(len(people)) for seed in spec.seeds for e in range(len(spec.recipes))]
    outcome = RunOutcome(run_dir, spec.run_subject_id)
    started = time.time()
    ours = connect(address)
    token = secrets.token_hex(16)
    markers = [paths.home() / MARKER, run_dir / MARKER]
    try:
        for marker in markers:
            marker.write_text(token, encoding="utf-8")
        res = _check_resources(ray, spec, task_resources(spec))
        here = ray.get_runtime_context().get_node_id()
        state = ray.remote(num_cpus=0)(_RunState).options(  # on the driver's node: it survives lost workers
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        ctx = {"home": str(paths.home()), "run_dir": str(run_dir), "token": token}
        opts = dict(res, max_retries=spec.execution.max_retries, retry_exceptions=False)
        prepare = ray.remote(_prepare_task).options(**opts)
        row_task = ray.remote(_row_task).options(**opts, scheduling_strategy="SPREAD")
        spec_ref = ray.put(spec)
        preps = {prepare.remote(spec_ref, k, ctx, state): k for k in range(len(people))}
        rows_of: dict = {}
        results: dict[int, dict] = {}
        splits: dict[int, object] = {}
        wrote_spec, stopping, last = False, None, None
        while preps or rows_of:
            try:
                ready, _ = ray.wait(list(preps) + list(rows_of), num_returns=1, timeout=0.5)
                for ref in ready:
                    rec = _get(ray, ref)
                    if "interrupted" in rec:
                        stopping = stopping or rec["interrupted"]
                        if not ray.get(state.is_stopped.remote()):
                            state.stop.remote()  # one person's erasure (or a cancel) stops the whole run
                    elif ref in preps:
                        k = preps[ref]
                        splits[k] = rec["split"]
                        prepared = [people[j].id for j in sorted(splits)]
                        if not wrote_spec:
                            write_owned(owners, run_dir / "spec.json", spec.resolved(), prepared)
                            wrote_spec = True
                        write_owned(owners, run_dir / "split.json",
                                    {people[j].id: splits[j].record() for j in sorted(splits)}, prepared)
                        for job, (kk, e, seed) in enumerate(jobs):
                            if kk == k:
                                rows_of[row_task.remote(spec_ref, job, k, e, seed, splits[k], ctx, state)] = job
                    else:
                        results[rows_of[ref]] = rec
                        _update_status(spec, outcome, jobs, results, people)
                        write_owned(owners, run_dir / "run.json", _run_record(
                            spec, outcome, started, _device(results), torch, executor="ray"),
                                    [people[j].id for j in sorted(splits)])
                    (preps if ref in preps else rows_of).pop(ref)
                if should_stop is not None and not stopping and should_stop():
                    stopping = "cancelled"
                    state.stop.remote()
                try:
                    snap = ray.get(state.snapshot.remote(), timeout=30)
                except ray.exceptions.ActorUnavailableError:
                    continue  # briefly unreachable while a lost node is handled: the progress line waits
                lines = progress_lines(_counts(jobs, results, snap["running"]), snap["running"])
                if lines != last:
                    report_progress("\n".join(lines), len(results) / len(jobs) * 0.95)
                    last = lines
            except KeyboardInterrupt:
                if stopping:  # the second Ctrl-C: stop now
                    for ref in list(preps) + list(rows_of):
                        ray.cancel(ref, force=True)
                    msg = "cancelled: every task was killed; a rerun resumes from the checkpoints"
                    raise Interrupted(msg) from None
                stopping = "cancelled (Ctrl-C)"
                state.stop.remote()
                log.warning("stopping every task at its next step (Ctrl-C again to kill them now)")
        if stopping:
            raise Interrupted(f"the run stopped ({stopping}); a rerun does only the missing work")
        rows = [results[job]["row"] for job in range(len(jobs))]
        by_subject = {people[k].id: splits[k] for k in range(len(people))}
        report_progress("report", 0.97)
        write_owned(owners, run_dir / "results.json", _results(spec, by_subject, rows, _device(results), torch), owners)
        from workbench.lifecycle.erasure import working_on

        with working_on(owners):
            publish(run_dir, spec)
        report_progress("done", 1.0)
        return outcome
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
        if ours:
            ray.shutdown()


def _get(ray, ref) -> dict:
    """A task's record; a task that died for good (retries spent) becomes a failed row; a user error
    (the shared-storage check, a bad photo folder) stops the run with its message."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise type(cause)(str(cause)) from None
        if isinstance(cause, Interrupted):
            return {"interrupted": str(cause)}
        return {"lost": f"{type(cause or exc).__name__}: {cause or exc}"}
    except Exception as exc:  # noqa: BLE001 - worker/node lost after every retry, object lost
        return {"lost": f"{type(exc).__name__}: {exc}"}


def _update_status(spec, outcome, jobs, results, people) -> None:
    """outcome.status in the order of the local executor; lost tasks become failed rows."""
    from workbench.runner import failed_row, row_name

    outcome.status.clear()
    for job, (k, e, seed) in enumerate(jobs):
        rec = results.get(job)
        if rec is None:
            continue
        entry, sid = spec.recipes[e], people[k].id
        name = row_name(spec, sid, entry, seed)
        if "lost" in rec and "row" not in rec:
            error = f"the task was lost after {spec.execution.max_retries} retries: {rec['lost']}"
            rec["row"] = failed_row({"label": entry.label, "recipe": entry.name, "seed": seed, "subject": sid,
                                     "params": entry.params}, error)
            rec["status"] = {"ok": False, "recipe": entry.name, "seed": seed, "subject": sid, "error": error}
        outcome.status[name] = rec["status"]


def _counts(jobs, results, running) -> dict:
    failed = sum(1 for r in results.values() if not r.get("status", {}).get("ok"))
    busy = sum(1 for j in running if j >= 0)
    return {"total": len(jobs), "done": len(results) - failed, "failed": failed, "running": busy,
            "left": len(jobs) - len(results) - busy}


def _device(results: dict) -> str:
    devices = sorted({r["device"] for r in results.values() if r.get("device")})
    return ", ".join(devices) or "cpu"
