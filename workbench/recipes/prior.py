"""Prior preservation (Ruiz et al. 2023, "DreamBooth", Eq. 2), for any recipe whose ``Params``
include :class:`~workbench.recipes.registry.PriorParams`.

Each step adds λ · E‖ε' - ε_θ(z'_t, t, c_class)‖² on class images z' that the *base* model generated
from the class prompt, so the model keeps its idea of "a person" instead of turning every person into
the subject (which is also what makes concept bleed: the subject appearing unasked). Class images are
written under the subject's folder (manifest kind ``class_image``) in a folder named by a hash of what
determines them (base weights, prompt, sampling settings, resolution), so reruns and other recipes
reuse them.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def class_images(pipe, job, params) -> list[Path]:
    """The first ``num_class_images`` class images of the base model, generating the missing ones."""
    from workbench import paths
    from workbench.content import base_key, content_key
    from workbench.generate import image_seed, png_bytes, sample_images
    from workbench.lifecycle import manifest

    prompt = job.class_prompt.format(class_noun=job.class_noun)
    key = {"base": base_key(job.base), "prompt": prompt,
           "steps": params.class_image_steps, "guidance": params.class_guidance_scale,
           "resolution": job.resolution}
    digest = content_key(key)
    folder = paths.subject_dir(job.subject_id) / "class_images" / digest
    wanted = [folder / f"class-{i:04d}.png" for i in range(params.num_class_images)]
    missing = [i for i, p in enumerate(wanted) if not p.exists()]
    if missing:
        log.info("generating %d class images for %r", len(missing), prompt)
        for start in range(0, len(missing), 8):
            chunk = missing[start:start + 8]
            images = sample_images(pipe, [prompt] * len(chunk), [image_seed(0, "class", 0, i) for i in chunk],
                                   steps=params.class_image_steps, guidance_scale=params.class_guidance_scale,
                                   batch_size=8, progress=False)
            for i, image in zip(chunk, images, strict=True):
                if image.size != (job.resolution, job.resolution):
                    image = image.resize((job.resolution, job.resolution))
                manifest.write_bytes(job.subject_id, "class_image", wanted[i], png_bytes(image))
    return wanted


def prior_loss(pipe, job, params):
    """The engine's ``extra_loss`` hook for prior preservation, or None when it is off.

    Call before anything trains: the class images must come from the base model."""
    if not params.prior_preservation:
        return None
    from workbench import diffusion

    prior = diffusion.encode_images(pipe, class_images(pipe, job, params), job.resolution)
    prompt = job.class_prompt.format(class_noun=job.class_noun)

    def extra(step):
        return params.prior_loss_weight * step.loss(prior, prompt)

    return extra
