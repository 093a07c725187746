#!/usr/bin/env bash
# The one command to run on a GPU machine (no downloads; fits 8 minutes on one GPU):
#
#   bash experiments/benchmarks/gpu_check.sh [--out gpu_check.json]      # SD 1.5 architecture, 512 px, CUDA
#   bash experiments/benchmarks/gpu_check.sh --tiny --device cpu --out x.json   # the CPU test's tiny version
#
# It builds the SD 1.5 architecture with seeded random weights, then measures DDIM-25 + CFG sampling,
# membership-inference queries/s, an SDXL LoRA step at 1024 px (SDXL architecture, random weights), the
# train-step benchmark (reference vs engine, LoRA and full, batch 4 and the largest that fits, with and
# without torch.compile) and peak memory, and writes one JSON
# (experiments/benchmarks/gpu_check.py says what each field is). Put its numbers in README.md ("Measured").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" HF_HUB_OFFLINE=1 TQDM_DISABLE=1 WANDB_MODE=offline
cd "$root"
exec "$python" experiments/benchmarks/gpu_check.py "$@"
