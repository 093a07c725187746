"""The upscaling policy for low-resolution photos (spec ``subject.upscale``), kept light for the spec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class UpscaleParams(BaseModel):
    """Upscaling of low-resolution photos (spec ``subject.upscale``; ``workbench intake --max-upscale``).

    Without it, a face narrower than :func:`workbench.subjects.intake.min_face_px` (half the resolution)
    is rejected. With it, such a photo is accepted when its aligned crop enlarges the photo by at most
    ``max_factor`` (crop pixels per source pixel, bicubic interpolation): e.g. LFW's 250 px photos
    (faces ~90 px) give 512 px crops at ~3.2x. The model then learns from interpolated, softer detail
    than a native photo has; the factor of every upscaled photo is recorded."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["bicubic"] = "bicubic"  # how the crop is enlarged (OpenCV's cubic warp of the alignment)
    max_factor: Annotated[float, Field(gt=1, le=8)] = 4.0  # largest enlargement (crop px per source px) accepted
