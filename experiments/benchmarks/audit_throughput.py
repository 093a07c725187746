"""Throughput of ``workbench audit`` (image-level metrics, no model) on real LFW photos.

Builds the folders a small experiment produces: 15 train and 5 holdout photos of one LFW demo person
(250 px originals, detected and aligned by the audit) and 20 generated images at ``--size`` px (JPEG
re-encodes of the person's training crops and other demo people's crops), taken as given
(``generated_aligned=True``: a model's own samples, already in its framing; the CLI's default would also
detect and align them). Runs :func:`workbench.metrics.audit.audit` ``--rounds`` times and reports the
best round: images per second over all 40 images, and the time of each stage: decoding + aligning,
embedding + identity metrics per encoder, memorisation distances + bootstrap (``meta.seconds_by_stage``).
The machine may be shared: run it under ``nice`` and compare rounds, not single numbers.

    nice -n 15 .venv/bin/python experiments/benchmarks/audit_throughput.py [--size 64] [--encoder sface]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEMO = ROOT.parent / "shared" / "data" / "lfw" / "demo"
SUBJECT = "Colin_Powell"
OTHERS = ("Laura_Bush", "Tony_Blair", "Naomi_Watts", "Hugo_Chavez", "Serena_Williams")


def build(root: Path, size: int) -> None:
    import numpy as np
    from PIL import Image

    from workbench.subjects.decode import load_photo
    from workbench.subjects.faces import align_crop, detect_faces

    def photo(person: str, n: int) -> Path:
        return DEMO / person / f"{person}_{n:04d}.jpg"

    def crop(person: str, n: int) -> Image.Image:
        img = load_photo(photo(person, n).read_bytes())
        face = max(detect_faces(np.asarray(img)), key=lambda f: f.area * f.score)
        return align_crop(img, face, size)

    for split, numbers in (("train", range(1, 16)), ("holdout", range(16, 21))):
        (root / split).mkdir(parents=True)
        for n in numbers:
            shutil.copy(photo(SUBJECT, n), root / split / photo(SUBJECT, n).name)
    gen = root / "generated"
    gen.mkdir()
    for i in range(10):  # a model that copies its training crops ...
        buf = io.BytesIO()
        crop(SUBJECT, i + 1).save(buf, format="JPEG", quality=75)
        (gen / f"copy_{i:02d}.jpg").write_bytes(buf.getvalue())
    for i in range(10):  # ... and faces of other people
        crop(OTHERS[i % len(OTHERS)], 1 + i // len(OTHERS)).save(gen / f"other_{i:02d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="generation size in px (default 64)")
    ap.add_argument("--encoder", action="append", help="identity encoder(s) (default sface)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from workbench.metrics.audit import audit

    encoders = args.encoder or ["sface"]
    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    try:
        build(tmp, args.size)
        folders = (tmp / "train", tmp / "holdout", tmp / "generated")
        # warm-up: models load on first use
        audit(*folders, encoders, progress=False, n_resamples=10, generated_aligned=True)
        rounds = []
        for _ in range(args.rounds):
            cpu = time.process_time()
            meta = audit(*folders, encoders, progress=False, generated_aligned=True)["meta"]
            meta["cpu_seconds"] = time.process_time() - cpu  # all threads of this process
            rounds.append(meta)
        best = min(rounds, key=lambda m: m["seconds"])
        n = sum(best["n"][k] for k in ("train", "holdout", "generated"))
        times = ", ".join(f"{m['seconds']:.2f}" for m in rounds)
        print(f"audit of {n} images ({best['n']['train']} train, {best['n']['holdout']} holdout, "
              f"{best['n']['generated']} generated at {args.size} px), encoders {encoders}; best of "
              f"{args.rounds} rounds ({times} s):")
        print(f"  total {best['seconds']:.2f} s = {n / best['seconds']:.1f} images/s (wall clock); "
              f"CPU {best['cpu_seconds']:.2f} s = {n / best['cpu_seconds']:.1f} images per CPU-second "
              f"(less sensitive to other processes on a shared machine)")
        for stage, sec in best["seconds_by_stage"].items():
            print(f"  {stage:<18} {sec:6.2f} s  ({sec / best['seconds']:.0%})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
