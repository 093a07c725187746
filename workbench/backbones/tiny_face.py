"""``tiny-face``: a genuine diffusers ``StableDiffusionPipeline`` small enough for a CPU.

Architecture (all standard diffusers/transformers classes, so every code path is the SD 1.5 one):
- tokenizer: a byte-level BPE ``CLIPTokenizer`` whose vocab/merges are written here, offline
  (256 byte symbols, their end-of-word forms, merges that make whole words of a headshot vocabulary);
- text encoder: ``CLIPTextModel``, 2 layers, width 64 (kept frozen at its seeded initialisation:
  distinct prompts give distinct embeddings, which is all the UNet needs);
- VAE: ``AutoencoderKL`` with one down-sampling (f = 2): 64×64×3 images ↔ 32×32×4 latents;
- UNet: ``UNet2DConditionModel`` on 32×32×4 latents (4.6 M parameters), cross-attention at 8×8.
Pretraining lives in :mod:`workbench.backbones.pretrain`.
"""

from __future__ import annotations

import json
from pathlib import Path

RESOLUTION = 64
MAX_TOKENS = 32
# Words that become single tokens; anything else (e.g. a rare identifier like "sks") splits into bytes.
WORDS = (
    "a an the of in on at with and photo photograph picture portrait headshot closeup "
    "professional linkedin profile studio lighting outdoors indoors suit shirt smiling smile face "
    "person man woman people high quality dslr sharp focus business corporate background office "
    "wearing black white blue red green grey gray light dark natural soft warm looking camera "
    "front view young old beard glasses hair short long casual formal dog cat"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _bpe(symbols: list[str], merges: list[str]) -> list[str]:
    """Apply BPE merges by rank, as CLIPTokenizer does."""
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, 1 << 30), i)
                 for i, pair in enumerate(zip(symbols, symbols[1:], strict=False))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def build_tokenizer_files(folder: Path) -> None:
    """Write vocab.json / merges.txt / tokenizer configs for a CLIPTokenizer, with no download."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in WORDS:  # add merges until every word is one token under real BPE priority rules
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], merges)
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = _bpe(pieces, merges)
    seen = set(vocab_list)
    for merge in merges:
        token = merge.replace(" ", "")
        if token not in seen:
            seen.add(token)
            vocab_list.append(token)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_TOKENS,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "do_lower_case": True,
    }, indent=1))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    }, indent=1))


def build_pipeline(folder: Path | None = None, seed: int = 0):
    """Build a randomly initialised tiny-face pipeline (and save it to ``folder`` if given)."""
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"), eos_token_id=eos,
        pad_token_id=eos,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=RESOLUTION,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16,
    )
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    if folder is not None:
        pipe.save_pretrained(folder, safe_serialization=True)
    return pipe
