"""The GPU check (issue #16, part 4) runs end to end on a CPU at tiny size and writes its one JSON.

``experiments/benchmarks/gpu_check.sh --tiny --device cpu``: the shrunken SD 1.5 architecture with random
weights, DDIM-25 + CFG sampling, membership-inference queries/s, the train-step benchmark (reference vs
engine, LoRA and full, a fixed batch and "max"), the SDXL step recorded as skipped, peak memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "gpu_check.sh"


def test_gpu_check_runs_on_a_cpu_at_tiny_size_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["tiny"] and data["reference_h100"]["lora_batch4_img_s"] == 28.6
    s = data["sections"]
    assert s["model"]["arch"] == "sd15" and s["model"]["resolution"] == 128
    assert s["sampling"]["scheduler"] == "DDIM" and s["sampling"]["steps"] == 25 and s["sampling"]["img_s"] > 0
    assert s["sampling"]["guidance_scale"] > 1  # classifier-free guidance on
    assert {"loss", "pia"} <= set(s["mia"]["attacks"]) and all(a["queries_s"] > 0 for a in s["mia"]["attacks"].values())
    sdxl = s["sdxl_lora_step"]
    assert sdxl["arch"] == "sdxl" and sdxl["timed_steps"] == 2 and sdxl["img_s"] > 0, sdxl
    configs = s["train_step"]["configs"]
    assert {(c["kind"], c["batch_request"]) for c in configs} == {("lora", "2"), ("lora", "max"), ("full", "2"),
                                                                   ("full", "max")}
    for c in configs:
        assert c.get("skipped") or min(c["engine_img_s"], c["reference_img_s"], c["reference_over_engine"]) > 0
    assert not any(s[k].get("error") for k in s if isinstance(s[k], dict)), s
    assert s["peak_memory"]["process_max_rss_gib"] > 0
    print(f"the tiny check took {seconds:.0f} s")  # a figure, not a limit (speed is the benchmark's job)
