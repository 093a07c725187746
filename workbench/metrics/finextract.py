"""FineXtract: extracting the fine-tuning photos from a personalised model *file*.

Wu, Zhang & Wu, "Revealing the Unseen: Guiding Personalized Diffusion Models to Expose Training Data"
(ICML 2025; authors' code Nicholas0228/FineXtract). Whoever holds the fine-tuned model and knows its
base extrapolates from the base towards the fine-tune, which points the sampler at the fine-tuning
data (the paper's Eq. 7, "model guidance"):

    ε̂(x_t) = ε_base(x_t, ∅) + w · (ε_ft(x_t, c) − ε_base(x_t, ∅)) + k · ε_base(x_t, ∅)

with c the training caption (DONE.json ``instance_prompt``), ∅ the empty prompt, deterministic DDIM
(Song et al. 2021, Eq. 12 with η = 0), 2 UNet calls per step. The authors' defaults: DreamBooth
w = 3.0, k = −0.02; LoRA w = 5.0, k = 0; 50 DDIM steps (:class:`FineXtractParams`). The base branch:

- ``lora``, ``dp_lora``: the *same* UNet with its adapters disabled (peft via diffusers'
  ``disable_adapters``; one UNet in memory);
- ``dreambooth`` (a whole pipeline): the base model loaded beside it;
- ``textual_inversion`` / ``pivotal``: the base's empty prompt (the learned token never enters it),
  with pivotal's adapters disabled; the paper has no defaults for them, LoRA's are used;
- ``none`` (the control): the base is the model; DreamBooth's defaults (a full model).

**Baseline** ("plain"): the fine-tuned model sampled the ordinary way, classifier-free guidance
ε_ft(∅) + g · (ε_ft(c) − ε_ft(∅)) with g = 3.0 (the authors' baseline), same DDIM steps and the *same*
starting latents, so paired differences are the attack's alone. Also 2 UNet calls per step.

**Clustering into candidates** (the paper's Sec. 4.3, authors' ``Cluster.py``): N = ``per_photo`` × N₀
generations (N₀ = number of training photos); a graph with an edge where similarity ≥ τ; remove the
largest clique (the largest of networkx's maximal cliques) repeatedly until the graph is empty (every
generation lands in one clique); starting from τ = the 25th percentile of the pair similarities (floored
to 0.01) raise τ by 0.01 until there are at least N₀ cliques and (in place of the authors' 30 s
enumeration timeout, which also raised τ) the graph has no more maximal cliques than nodes
(:func:`tractable`). Each clique's member nearest its mean descriptor is one candidate. The number of
candidates is an outcome, not a setting: a method whose generations are more varied gets more of them.
Clustering descriptor: the authors use SSCD (Pizzi et al., CVPR 2022) cosine; no SSCD model is available
offline here (:data:`COPY_SIMILARITY_UNAVAILABLE`), so it is *pixel correlation*: the cosine between
mean-centred RGB pixel vectors at the generation size.

**Matching** candidates to photos (the extraction criterion of the memorisation metrics): each candidate
is registered onto each photo (ECC affine warp, :func:`~workbench.metrics.memorization.registered_matrices`)
and compared over the central region, with the photo *and its mirror image*: training sees every photo
and its horizontal flip (:func:`workbench.diffusion.encode_images`), so a mirrored copy is a copy.
Similarity = registered pixel correlation (1 = the same image up to brightness and contrast). Stated in
every result (``descriptor``).

**Metrics** per method, over the subject's training photos (the resampled unit; bootstrap CI, n):

- ``rate``: share of training photos *extracted*: some candidate within δ of it in registered pixel ℓ2
  (:data:`~workbench.metrics.memorization.DELTA_REGISTERED_L2`, Carlini et al. 2023 Definition 1) and
  closer to it than to every holdout photo. Lower is better (privacy).
- ``avg_similarity``: mean over training photos of the similarity to their most similar candidate
  (the paper's "AS"). Lower is better (privacy).
- per photo also the best candidate's registered ℓ2 and its identity similarity (encoder cosine).
- **Control**: the holdout photos (same person, never trained on) go through the same matching: their
  rate and average similarity are what the attack achieves without membership.
- **Paired difference** FineXtract − plain over training photos (same latents): similarity, and
  registered ℓ2 (plain − FineXtract, positive = FineXtract closer), each with its CI.
- ``all_generations``: the best match with *every* generation a candidate (the authors'
  ``best_cluster_measurement``): what the guidance does, before the clustering keeps one image per clique.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from workbench.metrics.memorization import (
    COPY_SIMILARITY_UNAVAILABLE,
    DELTA_PROVENANCE,
    DELTA_REGISTERED_L2,
    as_float,
    mirrored,
    registered_matrices,
)
from workbench.metrics.registry import MetricDef, declare
from workbench.metrics.stats import Metric, bootstrap_mean, empty, share_note

log = logging.getLogger(__name__)

ATTACK = "finextract"
METHODS = ("finextract", "plain")  # the attack and its baseline (plain sampling, same latents)
Kind = Literal["full", "adapter", "embedding", "none"]
#: The authors' defaults (w, k) by what the artifact holds (Generator.py: DreamBooth cfg 3.0, fix −0.02;
#: LoRA cfg 5.0, fix 0.0). Textual inversion has none in the paper: LoRA's (a small change to a frozen UNet).
AUTHORS_DEFAULTS: dict[str, tuple[float, float]] = {"full": (3.0, -0.02), "none": (3.0, -0.02),
                                                    "adapter": (5.0, 0.0), "embedding": (5.0, 0.0)}
BASELINE_GUIDANCE = 3.0  # the authors' plain-sampling baseline: the fine-tuned pipeline at cfg 3.0
DESCRIPTOR = ("clustering: pixel correlation (cosine of mean-centred RGB pixel vectors at the generation size); "
              "matching: the same after ECC registration onto the photo or its mirror image, central region "
              "(SSCD, the authors' descriptor, is not available offline)")
PAPER = ("Wu, Zhang & Wu, Revealing the Unseen: Guiding Personalized Diffusion Models to Expose Training "
         "Data, ICML 2025")
CACHE_VERSION = 1

_TRAIN = "train photos (candidates fixed)"
declare(
    MetricDef("extraction.finextract.rate", "FineXtract extraction rate", "lower_is_better", "memorization",
              PAPER + ", Eq. 7 + Sec. 4.3; Carlini et al. 2023 Definition 1",
              "share of train photos with a clustered candidate within delta (registered l2) and nearer "
              "to it than to any holdout photo", _TRAIN, required=False, main=False),
    MetricDef("extraction.finextract.avg_similarity", "FineXtract avg similarity", "lower_is_better",
              "memorization", PAPER + ", Sec. 5 (AS)",
              "mean over train photos of max over candidates of registered pixel correlation", _TRAIN,
              required=False, main=False),
    MetricDef("extraction.plain.rate", "Plain-sampling extraction rate", "lower_is_better", "memorization",
              PAPER + ", baseline (cfg 3.0, same latents)", "as extraction.finextract.rate, plain sampling",
              _TRAIN, required=False, main=False),
    MetricDef("extraction.plain.avg_similarity", "Plain-sampling avg similarity", "lower_is_better",
              "memorization", PAPER + ", baseline (cfg 3.0, same latents)",
              "as extraction.finextract.avg_similarity, plain sampling", _TRAIN, required=False, main=False),
)
KEYS = tuple(f"extraction.{m}.{k}" for m in METHODS for k in ("rate", "avg_similarity"))


class FineXtractParams(BaseModel):
    """FineXtract's settings; ``None`` = the authors' default for the artifact (:data:`AUTHORS_DEFAULTS`)."""

    model_config = ConfigDict(extra="forbid")

    guidance: float | None = None  # w; None: DreamBooth 3.0, LoRA/TI 5.0
    fix_term: float | None = None  # k; None: DreamBooth -0.02, LoRA/TI 0.0
    steps: Annotated[int, Field(ge=1)] = 50  # DDIM steps (eta = 0)
    per_photo: Annotated[int, Field(ge=1)] = 50  # generations per training photo (N = per_photo x N0)
    baseline_guidance: float = BASELINE_GUIDANCE  # classifier-free guidance of the plain-sampling baseline
    batch_size: Annotated[int, Field(ge=1)] = 16  # images per UNet call
    seed: int = 0  # seeds the starting latents (shared by FineXtract and plain sampling)
    start_percentile: Annotated[float, Field(ge=0, le=100)] = 25.0  # first tau: this percentile of pair similarities
    tau_step: Annotated[float, Field(gt=0)] = 0.01  # tau rises by this until there are >= N0 clusters

    def resolved(self, kind: str) -> tuple[float, float]:
        """(w, k) for an artifact of ``kind``."""
        w, k = AUTHORS_DEFAULTS[kind]
        return (w if self.guidance is None else self.guidance, k if self.fix_term is None else self.fix_term)


# ---------------------------------------------------------------------------------------------------
# The model pair: ε_ft(x, c) and ε_base(x, ∅)


def guided_eps(eps_base_uncond, eps_ft_cond, w: float, k: float):
    """The paper's Eq. 7: ε̂ = ε_base(∅) + w·(ε_ft(c) − ε_base(∅)) + k·ε_base(∅) (tensors or arrays)."""
    return eps_base_uncond + w * (eps_ft_cond - eps_base_uncond) + k * eps_base_uncond


@dataclass
class ModelPair:
    """A fine-tuned pipeline and its base branch, counting UNet calls.

    ``base_unet`` is ``None`` when the base branch is the fine-tuned UNet itself, with its adapters
    disabled while it runs (``adapters``) or untouched (textual inversion, ``none``)."""

    pipe: object  # the fine-tuned diffusers pipeline (its VAE decodes)
    kind: Kind
    recipe: str
    caption: str  # c: the training caption
    base_unet: object | None = None  # DreamBooth: the base UNet loaded beside it
    base_pipe: object | None = None  # DreamBooth: the base pipeline (its text encoder encodes ∅)
    adapters: bool = False  # the base branch = pipe.unet with its peft adapters disabled
    amp: object | None = None  # autocast dtype (None: fp32)
    calls: int = 0  # UNet evaluations (a call on a batch counts once: calls per image)
    _text: dict = field(default_factory=dict)

    @property
    def unet(self):
        return self.pipe.unet

    @contextlib.contextmanager
    def adapters_off(self) -> Iterator[None]:
        """Disable the peft adapters of the UNet and the text encoder while inside (LoRA's base branch)."""
        if not self.adapters:
            yield
            return
        modules = [m for m in (self.pipe.unet, self.pipe.text_encoder) if getattr(m, "_hf_peft_config_loaded", False)]
        for m in modules:
            m.disable_adapters()
        try:
            yield
        finally:
            for m in modules:
                m.enable_adapters()

    def text(self, which: Literal["cond", "ft_uncond", "base_uncond"]):
        """Text embeddings (1, L, D): c and ∅ on the fine-tuned text encoder, ∅ on the base one."""
        from workbench.diffusion import encode_prompt

        if which not in self._text:
            if which == "cond":
                self._text[which] = encode_prompt(self.pipe, self.caption)
            elif which == "ft_uncond":
                self._text[which] = encode_prompt(self.pipe, "")
            else:
                base_pipe = self.base_pipe or self.pipe
                with self.adapters_off():
                    self._text[which] = encode_prompt(base_pipe, "")
        return self._text[which]

    def _run(self, unet, x, t, emb):
        import torch

        self.calls += 1
        device = unet.device
        with torch.no_grad(), torch.autocast(device.type, dtype=self.amp, enabled=self.amp is not None):
            out = unet(x.to(device), t, encoder_hidden_states=emb.to(device).expand(len(x), -1, -1)).sample
        return out.float()

    def eps_ft(self, x, t, which: Literal["cond", "ft_uncond"] = "cond"):
        """ε_ft(x_t, c) (or ε_ft(x_t, ∅)): the fine-tuned model as shipped, adapters on."""
        return self._run(self.unet, x, t, self.text(which))

    def eps_base_uncond(self, x, t):
        """ε_base(x_t, ∅): the base model on the empty prompt (adapters off / base UNet)."""
        emb = self.text("base_uncond")
        if self.base_unet is not None:
            return self._run(self.base_unet, x, t, emb)
        with self.adapters_off():
            return self._run(self.unet, x, t, emb)

    def eps(self, x, t, method: str, w: float, k: float, baseline_guidance: float):
        """The noise prediction of ``method``: FineXtract's Eq. 7 or plain classifier-free guidance."""
        if method == "finextract":
            return guided_eps(self.eps_base_uncond(x, t), self.eps_ft(x, t, "cond"), w, k)
        if method == "plain":
            uncond = self.eps_ft(x, t, "ft_uncond")
            return uncond + baseline_guidance * (self.eps_ft(x, t, "cond") - uncond)
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def artifact_kind(files: dict) -> Kind:
    if "pipeline" in files:
        return "full"
    if "lora" in files:
        return "adapter"
    if "embeddings" in files:
        return "embedding"
    return "none"


def model_kind(model) -> Kind:
    """What a :class:`~workbench.modelfile.loading.ModelFile` holds, as FineXtract's base branch needs it."""
    if model.kind == "workbench-artifact":
        return artifact_kind(model.done["files"])
    if model.kind == "pipeline":
        return "full"
    return "adapter" if "lora" in model.kind else "embedding"


def model_caption(model, caption: str | None = None) -> str:
    """c: the training caption the file records (DONE.json), else ``caption``, else "a photo of TOKEN person"."""
    from workbench.errors import UserError

    done = model.done or {}
    if done.get("instance_prompt"):
        return done["instance_prompt"]
    ident = model.identifier
    if caption:
        return caption.replace("{identifier}", ident) if ident else caption
    if ident:
        return f"a photo of {ident} person"
    raise UserError(f"--model {model.path.name} does not say what caption it was trained with: pass --prompt "
                    "(e.g. 'a photo of sks person'; `workbench inspect` shows a kohya file's tag frequencies)")


def _base_name(model, base: str | None) -> str | None:
    return base or (model.done or {}).get("base")


@contextlib.contextmanager
def _opened(model, owner: str | None = None):
    """A :class:`~workbench.modelfile.loading.ModelFile` as given, or a path opened with ``open_model``."""
    from workbench.modelfile.loading import ModelFile, open_model

    if isinstance(model, ModelFile):
        yield model
    else:
        with open_model(model, owner) as opened:
            yield opened


def load_pair(model, base: str | None = None, device: str = "cpu", amp="auto", caption: str | None = None) -> ModelPair:
    """Load a personalised model and its base branch, as a user would.

    ``model``: a workbench run or artifact folder, or any file ``workbench mia --model`` takes (a diffusers or
    kohya LoRA, a textual-inversion embedding, a diffusers folder, a ``.tar`` of one: loaded on ``base`` by
    :func:`workbench.modelfile.loading.load_model`), or an opened ``ModelFile``."""
    from workbench.backbones.registry import load_backbone
    from workbench.device import autocast_dtype
    from workbench.diffusion import family as diffusion_family
    from workbench.errors import UserError
    from workbench.modelfile.loading import load_model

    with _opened(model) as mf:
        kind, base_name = model_kind(mf), _base_name(mf, base)
        if kind == "full" and not base_name:
            raise UserError(f"--model {mf.path.name} is a whole fine-tuned pipeline: FineXtract also needs the base "
                            "it was fine-tuned from (pass --base)")
        pipe = load_model(mf, base, device)
        recipe = (mf.done or {}).get("recipe") or mf.kind
        pair = ModelPair(pipe=pipe, kind=kind, recipe=recipe, caption=model_caption(mf, caption),
                         amp=autocast_dtype(device) if amp == "auto" else amp)
    if diffusion_family(pipe).name != "sd":  # the shared family registry, as the attacks and recipes use it
        raise UserError(f"{diffusion_family(pipe).name.upper()} pipelines are not supported yet: FineXtract here "
                        "conditions on one CLIP text encoder")
    pair.adapters = any(getattr(m, "_hf_peft_config_loaded", False) for m in (pipe.unet, pipe.text_encoder))
    if kind == "full":
        base_pipe = load_backbone(base_name, device)
        if base_pipe.unet.config.sample_size != pipe.unet.config.sample_size:
            raise UserError(f"base {base_name} does not match the fine-tuned UNet's sample size")
        pair.base_unet = base_pipe.unet
        pair.base_pipe = base_pipe
    pipe.unet.eval()
    return pair


def model_identity(model, base: str | None, caption: str | None = None) -> dict:
    """What the generations are a function of: the model's tensors (or files), the caption and the base."""
    from workbench.content import base_key, weights_fingerprint
    from workbench.lifecycle.manifest import sha256_file

    with _opened(model) as mf:
        done, base_name = mf.done or {}, _base_name(mf, base)
        if done:
            weights = done["param_hash"]
        elif mf.kind == "pipeline":
            weights = weights_fingerprint(str(mf.folder))
        else:
            weights = [sha256_file(mf.folder / name) for name in (mf.lora, mf.embedding) if name]
        return {"recipe": done.get("recipe") or mf.kind, "param_hash": weights, "caption": model_caption(mf, caption),
                "base": base_key(base_name) if base_name else None}


# ---------------------------------------------------------------------------------------------------
# Sampling: deterministic DDIM from shared starting latents


def start_latents(pair: ModelPair, indices: Sequence[int], seed: int):
    """x_T for generation ``i``: N(0, I) from its own generator (seed, "finextract", i), × init σ."""
    import torch

    from workbench.generate import image_seed

    cfg = pair.unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(
        image_seed(seed, "finextract", 0, int(i)))) for i in indices])


def ddim_sample(pair: ModelPair, latents, method: str, params: FineXtractParams, w: float, k: float):
    """Deterministic DDIM (η = 0) from ``latents`` with ``method``'s prediction → uint8 images (B, H, W, 3)."""
    import torch
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pair.pipe.scheduler.config)
    sched.set_timesteps(params.steps)
    x = latents.to(pair.unet.device, torch.float32) * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        eps = pair.eps(x_in, t, method, w, k, params.baseline_guidance)
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    return decode(pair.pipe, x)


def decode(pipe, latents) -> np.ndarray:
    import torch

    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        img = vae.decode((latents / vae.config.scaling_factor + shift).to(vae.device, vae.dtype)).sample
    img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.permute(0, 2, 3, 1).cpu().numpy()


def generate(pair: ModelPair, n: int, params: FineXtractParams, cache: Path, identity: dict,
             subject_id: str | None = None, progress: bool = True) -> dict[str, list[Path]]:
    """``n`` generations per method into ``cache/<content key>/`` (resumable: files on disk are kept).

    The folder's key covers the model (tensors, base weights, caption), the method's settings and the
    seed; image ``i`` of either method starts from the same latent. With ``subject_id`` the files are
    registered in that subject's manifest (erasure removes them)."""
    from tqdm.auto import tqdm

    from workbench.content import content_key
    from workbench.generate import png_bytes
    from workbench.lifecycle import manifest

    w, k = params.resolved(pair.kind)
    out: dict[str, list[Path]] = {}
    for method in METHODS:
        settings = {"method": method, "steps": params.steps, "seed": params.seed, "scheduler": "ddim-eta0",
                    "version": CACHE_VERSION} | ({"w": w, "k": k} if method == "finextract"
                                                 else {"guidance": params.baseline_guidance})
        folder = Path(cache) / f"{method}-{content_key(identity | settings)}"
        files = [folder / f"{i:05d}.png" for i in range(n)]
        todo = [i for i, f in enumerate(files) if not f.is_file()]
        if todo:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "settings.json").write_text(json.dumps(identity | settings, indent=1), encoding="utf-8")
            log.info("%s (%s): generating %d of %d images", method, pair.recipe, len(todo), n)
        batches = range(0, len(todo), params.batch_size)
        for b in tqdm(batches, desc=f"{method} ({pair.recipe})", unit="batch", disable=not progress or not todo):
            idx = todo[b:b + params.batch_size]
            from PIL import Image

            images = ddim_sample(pair, start_latents(pair, idx, params.seed), method, params, w, k)
            for i, img in zip(idx, images, strict=True):
                data = png_bytes(Image.fromarray(img))
                if subject_id:
                    manifest.write_bytes(subject_id, "generation", files[i], data)
                else:
                    manifest.atomic_write_bytes(files[i], data)
        out[method] = files
    return out


def queries_per_image(params: FineXtractParams) -> dict[str, int]:
    """UNet calls per generated image: 2 per DDIM step for both (ε_base(∅) + ε_ft(c); ε_ft(∅) + ε_ft(c))."""
    return {m: 2 * params.steps for m in METHODS}


# ---------------------------------------------------------------------------------------------------
# Clustering into candidates (largest-clique removal with a rising threshold)


def descriptors(images: np.ndarray) -> np.ndarray:
    """Pixel-correlation descriptors: mean-centred, unit-norm RGB pixel vectors, (N, D) float64."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


@dataclass(frozen=True)
class Clusters:
    clusters: list[list[int]]  # indices of the generations in each clique, largest first
    candidates: list[int]  # per cluster, the member nearest its mean descriptor
    tau: float  # the threshold that gave >= n_min clusters
    thresholds_tried: int


def _graph(sim: np.ndarray, tau: float):
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(len(sim)))
    rows, cols = np.nonzero(np.triu(sim >= tau, 1))
    graph.add_edges_from(zip(rows.tolist(), cols.tolist(), strict=True))
    return graph


def clique_cover(sim: np.ndarray, tau: float) -> list[list[int]]:
    """Edges where ``sim >= tau``; remove the largest clique until no node is left (authors' loop, min size 1).

    The largest clique of each round is the largest of networkx's maximal cliques (``find_cliques``), the
    first found on a tie, as in the authors' ``Cluster.py``."""
    import networkx as nx

    graph = _graph(sim, tau)
    out = []
    while graph.number_of_nodes():
        largest = sorted(max(nx.find_cliques(graph), key=len))
        out.append(largest)
        graph.remove_nodes_from(largest)
    return out


def tractable(sim: np.ndarray, tau: float) -> bool:
    """Whether the graph at ``tau`` has at most as many maximal cliques as nodes.

    The deterministic stand-in for the authors' 30 s timeout on clique enumeration (``Cluster.py``,
    ``run_with_timeout``: on a timeout τ += 0.01), which at their scale (500 generations) raises τ well past
    the 25th percentile: a graph whose maximal cliques outnumber its nodes is one where copies of different
    photos are still chained together, and τ is raised past it."""
    import itertools

    import networkx as nx

    n = len(sim)
    return sum(1 for _ in itertools.islice(nx.find_cliques(_graph(sim, tau)), n + 1)) <= n


def cluster_candidates(desc: np.ndarray, n_min: int, start_percentile: float = 25.0,
                       tau_step: float = 0.01) -> Clusters:
    """Cluster generations into >= ``n_min`` cliques of the similarity graph (FineXtract Sec. 4.3).

    τ starts at the ``start_percentile`` of the pair similarities (floored to a multiple of
    ``tau_step``) and rises by ``tau_step`` until the graph is :func:`tractable` and its clique cover
    has at least ``n_min`` cliques.
    Candidate of a clique: the member whose descriptor is nearest (ℓ2) the clique's mean descriptor."""
    n = len(desc)
    if n < n_min:
        raise ValueError(f"{n} generations cannot form {n_min} clusters")
    sim = desc @ desc.T
    pairs = sim[np.triu_indices(n, 1)]
    tau = math.floor(np.percentile(pairs, start_percentile) / tau_step) * tau_step if len(pairs) else 1.0
    tried = 0
    while True:
        tried += 1
        if tractable(sim, tau):
            cover = clique_cover(sim, tau)
            if len(cover) >= n_min:
                break
        tau += tau_step
    cands = []
    for members in cover:
        d = desc[members]
        cands.append(members[int(np.argmin(np.linalg.norm(d - d.mean(axis=0), axis=1)))])
    return Clusters(cover, cands, float(tau), tried)


# ---------------------------------------------------------------------------------------------------
# Matching candidates to the training photos (and to the holdout photos, the control)


def registered_to(candidates: np.ndarray, photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(registered ℓ2, registered pixel correlation), (C, P): each candidate against each photo or its mirror
    image, whichever is nearer (training sees both: :func:`workbench.diffusion.encode_images`)."""
    if not len(photos):
        return np.zeros((len(candidates), 0)), np.zeros((len(candidates), 0))
    l2, corr = registered_matrices(candidates, photos)
    l2_m, corr_m = registered_matrices(candidates, mirrored(photos))
    return np.minimum(l2, l2_m), np.maximum(corr, corr_m)


def match(candidates: np.ndarray, train: np.ndarray, holdout: np.ndarray, delta: float = DELTA_REGISTERED_L2,
          encoder: str | None = "sface") -> dict:
    """Per training photo: best candidate by registered ℓ2, extracted or not, best similarity, identity.

    Images are float (N, S, S, 3) in [0, 1]. A training photo counts as extracted when a candidate is
    within δ of it *and* nearer to it than to every holdout photo (a copy of a non-member is not
    extraction of a member)."""
    d_train, s_train = registered_to(candidates, train)  # (C, T)
    d_hold, s_hold = registered_to(candidates, holdout)  # (C, H)
    nearest_holdout = d_hold.min(axis=1) if d_hold.shape[1] else np.full(len(candidates), np.inf)
    within = (d_train <= delta) & (d_train < nearest_holdout[:, None])
    best = d_train.argmin(axis=0)
    out = {
        "best_candidate": best,
        "best_registered_l2": d_train.min(axis=0),
        "extracted": within.any(axis=0),
        "similarity": s_train.max(axis=0),
        "most_similar_candidate": s_train.argmax(axis=0),
        "holdout_within_delta": (d_hold <= delta).any(axis=0),
        "holdout_similarity": s_hold.max(axis=0),
        "holdout_best_registered_l2": d_hold.min(axis=0),
    }
    out["identity_similarity"] = np.full(len(train), np.nan)
    if encoder:
        from workbench.metrics.encoders import embed

        u8 = lambda a: [np.round(x * 255).astype(np.uint8) for x in a]  # noqa: E731
        ec, fc = embed(u8(candidates[best]), encoder, progress=False)
        et, ft = embed(u8(train), encoder, progress=False)
        ok = fc & ft
        out["identity_similarity"][ok] = (ec[ok] * et[ok]).sum(axis=1)
    return out


def _metrics(m: dict, n_train: int, n_holdout: int, kw: dict) -> dict[str, Metric]:
    note = share_note(n_train, "train photos") + "; resampled unit: train photos (candidates fixed)"
    ident = m["identity_similarity"][np.isfinite(m["identity_similarity"])]
    return {
        "rate": bootstrap_mean(m["extracted"].astype(float), note=note, **kw),
        "avg_similarity": bootstrap_mean(m["similarity"], note="registered pixel correlation of each train photo "
                                                               "to its most similar candidate", **kw),
        "best_registered_l2": bootstrap_mean(m["best_registered_l2"], **kw),
        "identity_similarity": bootstrap_mean(ident, note=f"{len(ident)} of {n_train} train photos with a face "
                                                          "in both", empty_note="no face found", **kw),
        "holdout_rate": bootstrap_mean(m["holdout_within_delta"].astype(float), note=share_note(
            n_holdout, "holdout photos") + " (control: not members)", empty_note="no holdout photos", **kw),
        "holdout_avg_similarity": bootstrap_mean(m["holdout_similarity"], note="control: not members",
                                                 empty_note="no holdout photos", **kw),
    }


def evaluate(generated: dict[str, list[np.ndarray]], train: Sequence[np.ndarray], holdout: Sequence[np.ndarray],
             n_min: int | None = None, params: FineXtractParams | None = None, encoder: str | None = "sface",
             delta: float = DELTA_REGISTERED_L2, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Cluster each method's generations into candidates and match them to the subject's photos.

    ``generated``: method → RGB uint8 images (the same starting latents, in the same order). Returns
    per method the :class:`Metric` dicts (module docstring), the per-photo arrays, the candidates and
    clusters, and ``difference``: paired FineXtract − plain over training photos. Photos are compared at the
    generation size (resized to it, as the memorisation metrics do)."""
    params = params or FineXtractParams()
    size = int(np.asarray(next(iter(generated.values()))[0]).shape[0])  # the model's framing and size
    tr, ho = as_float(train, size), as_float(holdout, size) if len(holdout) else np.zeros((0, size, size, 3))
    n_min = n_min or len(tr)
    kw = {"n_resamples": n_resamples, "seed": seed}
    result: dict = {"descriptor": DESCRIPTOR, "copy_similarity": dict(COPY_SIMILARITY_UNAVAILABLE),
                    "delta": {"registered_l2": delta, "provenance": DELTA_PROVENANCE},
                    "n_train": len(tr), "n_holdout": len(ho), "methods": {}}
    per: dict[str, dict] = {}
    every: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per method: best l2 and similarity over all generations
    for method, images in generated.items():
        gen = as_float(images, size)
        clusters = cluster_candidates(descriptors(gen), n_min, params.start_percentile, params.tau_step)
        cand = gen[clusters.candidates]
        m = match(cand, tr, ho, delta, encoder)
        per[method] = m
        metrics = _metrics(m, len(tr), len(ho), kw)
        d_all, s_all = registered_to(gen, tr)
        every[method] = (d_all.min(axis=0), s_all.max(axis=0))
        result["methods"][method] = {
            "metrics": {k: v.to_dict() for k, v in metrics.items()},
            "all_generations": {  # the authors' "best clustering" bound: every generation a candidate
                "avg_similarity": bootstrap_mean(every[method][1], **kw).to_dict(),
                "best_registered_l2": bootstrap_mean(every[method][0], **kw).to_dict(),
                "rate": bootstrap_mean((every[method][0] <= delta).astype(float), note="within delta only (no holdout "
                                       "check)", **kw).to_dict()},
            "n_generations": len(gen), "n_clusters": len(clusters.clusters), "tau": clusters.tau,
            "thresholds_tried": clusters.thresholds_tried, "candidates": clusters.candidates,
            "cluster_sizes": [len(c) for c in clusters.clusters],
            "per_photo": [{"train_index": j, "best_candidate": int(clusters.candidates[m["best_candidate"][j]]),
                           "registered_l2": float(m["best_registered_l2"][j]), "extracted": bool(m["extracted"][j]),
                           "similarity": float(m["similarity"][j]),
                           "identity_similarity": _f(m["identity_similarity"][j])} for j in range(len(tr))],
        }
    if set(METHODS) <= set(per):
        fx, pl = per["finextract"], per["plain"]
        result["difference"] = {
            "avg_similarity": bootstrap_mean(fx["similarity"] - pl["similarity"], note="paired over train photos: "
                                             "FineXtract - plain (same starting latents); > 0: FineXtract closer",
                                             **kw).to_dict(),
            "registered_l2": bootstrap_mean(pl["best_registered_l2"] - fx["best_registered_l2"], note="paired: "
                                            "plain - FineXtract best registered l2; > 0: FineXtract closer",
                                            **kw).to_dict(),
            "rate": bootstrap_mean(fx["extracted"].astype(float) - pl["extracted"].astype(float),
                                   note="paired: FineXtract - plain extracted (0/1) per train photo", **kw).to_dict(),
            "all_generations_avg_similarity": bootstrap_mean(
                every["finextract"][1] - every["plain"][1], note="paired, every generation a candidate (no "
                "clustering): the guidance's effect alone", **kw).to_dict(),
        }
    return result


def _f(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def flat_metrics(result: dict) -> dict[str, dict]:
    """The registered keys (``extraction.<method>.rate`` / ``.avg_similarity``) of an :func:`evaluate` result."""
    out = {}
    for method in METHODS:
        m = result.get("methods", {}).get(method)
        for k in ("rate", "avg_similarity"):
            out[f"extraction.{method}.{k}"] = m["metrics"][k] if m else empty("not measured").to_dict()
    return out


# ---------------------------------------------------------------------------------------------------
# One call: a model folder and the subject's photos → everything above


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def run_finextract(model, train: Sequence[Path], holdout: Sequence[Path], cache: Path,
                   base: str | None = None, params: FineXtractParams | None = None, device: str = "cpu",
                   encoder: str | None = "sface", subject_id: str | None = None, n_resamples: int = 2000,
                   progress: bool = True, caption: str | None = None) -> dict:
    """FineXtract and plain sampling of one personalised model against the subject's photos.

    ``model``: what :func:`load_pair` takes. Generates ``per_photo`` × len(train) images per method
    (cached in ``cache``, resumable), clusters, matches, and returns :func:`evaluate`'s result plus the
    parameters, query cost and wall time."""
    from workbench.errors import UserError

    params = params or FineXtractParams()
    if not train:
        raise UserError("FineXtract needs the training photos (the photos to look for)")
    t0 = time.time()
    with _opened(model, subject_id) as mf:
        identity = model_identity(mf, base, caption)
        pair = load_pair(mf, base, device, caption=caption)
    n = params.per_photo * len(train)
    files = generate(pair, n, params, Path(cache), identity, subject_id=subject_id, progress=progress)
    calls, kind = pair.calls, pair.kind
    del pair
    generated = {m: [read_rgb(f) for f in fs] for m, fs in files.items()}
    result = evaluate(generated, [read_rgb(p) for p in train], [read_rgb(p) for p in holdout], params=params,
                      encoder=encoder, n_resamples=n_resamples, seed=params.seed)
    w, k = params.resolved(kind)
    for method, fs in files.items():
        result["methods"][method]["files"] = [str(f) for f in fs]
    result |= {"attack": ATTACK, "recipe": identity["recipe"], "caption": identity["caption"],
               "params": params.model_dump(mode="json") | {"w": w, "k": k},
               "queries_per_image": queries_per_image(params), "unet_calls_this_run": calls,
               "seconds": round(time.time() - t0, 1), "paper": PAPER}
    return result


def measure_extraction(artifact: str | Path, train: Sequence[Path], holdout: Sequence[Path], gen_dir: Path,
                       base: str, params: FineXtractParams, device: str, encoder: str | None,
                       subject_id: str | None, run_dir: Path | None = None) -> tuple[dict, dict]:
    """For a run's row: (the registered ``extraction.*`` keys, the details for the report).

    Generations go to ``gen_dir/finextract`` (registered in the subject's manifest); the details keep
    per method the candidates' files (relative to ``run_dir`` when given, as the report reads them), the
    per-photo matches (each with its best candidate's file and the training photo's store path), metrics,
    the paired difference and the query cost, not the full list of generations."""
    from workbench.lifecycle.sealed import at_rest

    res = run_finextract(artifact, train, holdout, Path(gen_dir) / "finextract", base=base, params=params,
                         device=device, encoder=encoder, subject_id=subject_id)

    def rel(f: str) -> str:
        return str(Path(f).relative_to(run_dir)) if run_dir is not None and Path(f).is_relative_to(run_dir) else f

    for m in res["methods"].values():
        files = m.pop("files")
        m["candidate_files"] = [rel(files[i]) for i in m["candidates"]]
        for p in m["per_photo"]:  # the best candidate beside its training photo (report gallery)
            p["file"], p["train"] = rel(files[p["best_candidate"]]), str(at_rest(train[p["train_index"]]))
    return flat_metrics(res), res
