"""Quality gate for a pretrained base: can it paint faces, and different ones?

- FDFR: share of samples in which the face detector finds no face (Van Le et al., ICCV 2023,
  Anti-DreamBooth, Sec. 5.1); lower is better. Samples are upscaled to 256 px before detection.
- Diversity: mean pairwise pixel ℓ2, sqrt(Σ(aᵢ−bᵢ)²/d) with pixels in [0, 1] (the distance of
  Carlini et al. 2023), over all pairs of samples; compared with the same number on real crops,
  because a model that paints the mean face passes FDFR alone.
"""

from __future__ import annotations

import numpy as np


def detection_failure_rate(images: list[np.ndarray], upscale: int = 256) -> float:
    from PIL import Image

    from workbench.subjects.faces import detect_faces

    misses = 0
    for img in images:
        big = np.asarray(Image.fromarray(img).resize((upscale, upscale), Image.BICUBIC))
        misses += not detect_faces(big)
    return misses / max(1, len(images))


def mean_pairwise_l2(images: np.ndarray) -> float:
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0) / x.shape[1]
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(d2[iu]).mean())


def sample(pipe, n: int, seed: int, prompt: str = "a photo of a person", steps: int = 25,
           guidance: float = 3.0, batch: int = 32) -> np.ndarray:
    import torch

    out = []
    for i in range(0, n, batch):
        k = min(batch, n - i)
        gen = torch.Generator().manual_seed(seed + i)
        res = pipe([prompt] * k, num_inference_steps=steps, guidance_scale=guidance,
                   generator=gen, output_type="np")
        out.append((res.images * 255).round().clip(0, 255).astype(np.uint8))
    return np.concatenate(out)


def evaluate_quality(pipe, real_crops: np.ndarray, n: int = 64, seed: int = 0) -> dict:
    """FDFR and diversity of ``n`` samples next to the same numbers for ``n`` real crops."""
    pipe.set_progress_bar_config(disable=True)
    samples = sample(pipe, n, seed)
    real = real_crops[np.random.default_rng(seed).choice(len(real_crops), n, replace=False)]
    return {
        "n_samples": n,
        "fdfr_samples": detection_failure_rate(list(samples)),
        "fdfr_real": detection_failure_rate(list(real)),
        "diversity_samples": mean_pairwise_l2(samples),
        "diversity_real": mean_pairwise_l2(real),
        "sampler": "DDIM 25 steps, guidance 3.0, prompt 'a photo of a person'",
    }
