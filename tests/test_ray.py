"""The Ray executor (#14): a two-node local cluster on loopback gives the local executor's results.json,
reruns do only the missing work, a lost node's task is retried and resumes from its checkpoint, and
nothing listens beyond loopback. Each node: 1 CPU, a small object store; tiny step counts."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from results_helpers import leaves

ray = pytest.importorskip("ray")

from workbench.backbones.tiny_face import build_pipeline  # noqa: E402
from workbench.runner import run_experiment  # noqa: E402
from workbench.spec import parse_spec  # noqa: E402

STORE = 150 * 2**20  # object store per node: rows move small records only
LOOPBACK = ("127.", "[::1]", "::1", "[::ffff:127.")


def listeners() -> set[str]:
    """Local addresses of listening TCP sockets (`ss -ltn`, iproute2)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def non_loopback(addresses: set[str]) -> set[str]:
    return {a for a in addresses if not a.startswith(LOOPBACK)}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "tiny"
    build_pipeline(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, every service on 127.0.0.1, no dashboard, no usage stats."""
    from ray.cluster_utils import Cluster

    from workbench.ray_executor import _loopback_only

    before = listeners()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    _loopback_only()  # else Ray rewrites 127.0.0.1 to the host's routable address (Linux)
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": STORE}
    c = Cluster(initialize_head=True, head_node_args=node | {"include_dashboard": False})
    c.add_node(**node)
    ray.init(address=c.address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    c.before = before
    yield c
    ray.shutdown()
    c.shutdown()


def _spec(base: Path, **over) -> dict:
    spec = {
        "version": 1, "name": "raytest", "backbone": str(base), "device": "cpu",
        "cohort": {"people": ["Jason_Kidd", "Ian_Thorpe"], "members": 5},
        "recipes": [{"name": "none"}, {"name": "lora", "params": {"steps": 2}}],
        "prompts": {"with_identifier": ["a photo of {identifier} {class_noun}"],
                    "without_identifier": ["a photo of a {class_noun}"]},
        "images_per_prompt": 1, "sampling": {"steps": 2, "batch_size": 4},
        "tracking": {"wandb": "off"}, "metrics": {"encoders": ["sface"], "mia_attacks": ["loss", "pia"]},
        "execution": {"executor": "ray"},
    }
    spec.update(over)
    return spec


def start_run(spec, run_dir: Path, **kw):
    """``run_experiment`` in a thread: (thread, {"outcome": ...} once done, [the exception, if any])."""
    done, errors = {}, []

    def run():
        try:
            done["outcome"] = run_experiment(spec, run_dir, **kw)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, errors


def wait_for_checkpoint(models: Path, thread: threading.Thread, errors: list, timeout: float = 300) -> None:
    """Until a LoRA row has written its first checkpoint (fails if the run ended or errored first)."""
    deadline = time.time() + timeout
    while not list(models.glob("lora-*/checkpoint/step-*")) and time.time() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert list(models.glob("lora-*/checkpoint/step-*")), errors


def _files(folder: Path, pattern: str = "*") -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.glob(pattern) if p.is_file()}


def test_ray_run_equals_the_local_run_on_two_nodes_and_a_rerun_trains_nothing(cluster, base, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home-ray"))
    spec = parse_spec(_spec(base))
    lines, during = [], []

    def progress(text, frac):
        lines.append(text)
        if "running" in text and not text.startswith("rows: 0 done, 0 running") and len(during) < 3:
            during.append(listeners())

    t0 = time.time()
    outcome = run_experiment(spec, tmp_path / "run-ray", progress)
    ray_seconds = time.time() - t0
    assert outcome.ok, outcome.status
    assert len({s["node_id"] for s in outcome.status.values()}) == 2  # rows ran on both nodes
    # nothing the run started listens beyond loopback
    assert during, lines
    for now in during:
        assert not non_loopback(now - cluster.before), now - cluster.before
    assert any(line.startswith("rows: ") and "running" in line for line in lines)
    assert any("\n  " in line for line in lines)  # one line per running task

    # the same spec, run locally on an empty data root: the same results.json, metric by metric
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home-local"))
    t0 = time.time()
    assert run_experiment(spec, tmp_path / "run-local", executor="local").ok
    local_seconds = time.time() - t0
    text = {k: (tmp_path / f"run-{k}" / "results.json").read_text().replace(f"home-{k}", "H").replace(f"run-{k}", "R")
            for k in ("ray", "local")}  # absolute paths of photos differ by the data root only
    got, want = (dict(leaves(json.loads(text[k]))) for k in ("ray", "local"))
    assert got.keys() == want.keys()
    differ = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not differ, differ
    assert (tmp_path / "run-ray" / "split.json").read_bytes() == (tmp_path / "run-local" / "split.json").read_bytes()
    assert (tmp_path / "run-ray" / "spec.json").read_bytes() == (tmp_path / "run-local" / "spec.json").read_bytes()
    print(f"\nwall time: ray {ray_seconds:.1f} s, local {local_seconds:.1f} s")

    # a rerun (e.g. after a crash) trains, generates and measures nothing: models, images and metrics
    # stay as they were (records.jsonl is rewritten with the same lines, as locally)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home-ray"))
    models = _files(tmp_path / "home-ray" / "subjects", "*/models/**/*")
    generations = _files(tmp_path / "run-ray" / "generations", "**/*.png") | _files(tmp_path / "run-ray",
                                                                                     "**/metrics.json")
    assert len(models) > 10 and len(generations) > 10
    assert run_experiment(spec, tmp_path / "run-ray").ok
    for before, after in ((models, _files(tmp_path / "home-ray" / "subjects", "*/models/**/*")),
                          (generations, _files(tmp_path / "run-ray" / "generations", "**/*.png")
                           | _files(tmp_path / "run-ray", "**/metrics.json"))):  # images, measurements
        assert after == before, sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    run = json.loads((tmp_path / "run-ray" / "run.json").read_text())
    assert run["executor"] == "ray"


def test_a_node_lost_mid_training_gets_its_task_retried_and_resumed_from_the_checkpoint(cluster, base, tmp_path,
                                                                                      monkeypatch):
    """The rows need a custom resource only the victim node offers; it checkpoints every step and is slow
    (test hooks). Killed mid-training, its task goes to a fresh node, which resumes from the checkpoint."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": STORE, "resources": {"rows": 1}}
    hooks = {"WORKBENCH_TEST_HOOKS": "1", "WORKBENCH_TEST_CHECKPOINT_EVERY": "1", "WORKBENCH_TEST_STEP_DELAY": "3"}
    victim = cluster.add_node(**node, env_vars=hooks)
    spec = parse_spec(_spec(base, cohort=None, subject={"demo": "Naomi_Watts"},
                            recipes=[{"name": "none"}, {"name": "lora", "params": {"steps": 4}}],
                            metrics={"encoders": ["sface"], "mia_attacks": ["loss"]},
                            execution={"executor": "ray", "resources": {"custom": {"rows": 1}}}))
    thread, done, errors = start_run(spec, tmp_path / "run")
    models = tmp_path / "home" / "subjects" / spec.subject.id / "models"
    wait_for_checkpoint(models, thread, errors)  # training on the victim, checkpointed
    cluster.remove_node(victim, allow_graceful=False)  # the node is lost mid-training
    cluster.add_node(**node)  # another node (without the hooks) that can take the rows
    thread.join(timeout=400)
    assert not thread.is_alive() and not errors, errors
    outcome = done["outcome"]
    assert outcome.ok, outcome.status
    lora = outcome.status["lora/seed0"]
    assert lora["resumed_from_step"] >= 1, lora  # the retry resumed from the lost node's checkpoint
    assert lora["train_steps"] == 4
    losses = [json.loads(x) for x in next(models.glob("lora-*/loss.jsonl")).read_text().splitlines()]
    assert [x["step"] for x in losses] == [1, 2, 3, 4]


def test_cancel_stops_every_task_at_its_next_step_and_a_rerun_resumes(cluster, base, tmp_path, monkeypatch):
    """The app's Cancel (``should_stop``) during training on Ray: the run raises Interrupted without writing
    results.json, training stopped at a checkpointed step well before its end, and a rerun resumes there."""
    from workbench.errors import Interrupted

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    hooks = {"WORKBENCH_TEST_HOOKS": "1", "WORKBENCH_TEST_CHECKPOINT_EVERY": "1", "WORKBENCH_TEST_STEP_DELAY": "1.5"}
    cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, object_store_memory=STORE,
                     resources={"slow_rows": 1}, env_vars=hooks)
    steps = 10
    spec = parse_spec(_spec(base, cohort=None, subject={"demo": "Naomi_Watts"},
                            recipes=[{"name": "none"}, {"name": "lora", "params": {"steps": steps}}],
                            metrics={"encoders": ["sface"], "mia_attacks": ["loss"]},
                            execution={"executor": "ray", "resources": {"custom": {"slow_rows": 1}}}))
    cancel = threading.Event()
    thread, done, errors = start_run(spec, tmp_path / "run", should_stop=cancel.is_set)
    models = tmp_path / "home" / "subjects" / spec.subject.id / "models"
    wait_for_checkpoint(models, thread, errors)
    cancelled_at = time.time()
    cancel.set()
    thread.join(timeout=120)
    assert not thread.is_alive() and not done, "the run did not stop"
    assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
    assert time.time() - cancelled_at < 60  # at the next step, not at the end of the slow steps
    assert not (tmp_path / "run" / "results.json").exists()
    stopped = max(int(p.name.split("-")[1]) for p in models.glob("lora-*/checkpoint/step-*"))
    assert 1 <= stopped < steps

    outcome = run_experiment(spec, tmp_path / "run")  # the rerun does only the missing steps
    row = outcome.status["lora/seed0"]
    assert outcome.ok and row["resumed_from_step"] == stopped and row["train_steps"] == steps
    losses = [json.loads(x) for x in next(models.glob("lora-*/loss.jsonl")).read_text().splitlines()]
    assert [x["step"] for x in losses] == list(range(1, steps + 1))
