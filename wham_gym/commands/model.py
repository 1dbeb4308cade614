"""``wham-gym convert`` and ``wham-gym info``: official checkpoints to our format, and what a model is."""

from __future__ import annotations

import argparse
import json

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert an official WHAM .ckpt into wham-gym's safetensors format, once",
                       description="Read an official WHAM checkpoint with a restricted unpickler (no code from the "
                                   "file runs; optimizer state is never read) and write config.json + "
                                   "model.safetensors + card.json. The result loads with no pickle at all.")
    p.add_argument("ckpt", help="path to WHAM_200M.ckpt, WHAM_1.6B_v1.ckpt or another WHAM-format checkpoint")
    p.add_argument("out_dir", help="directory to create")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="store weights in this dtype (default: as in the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("info", help="describe a model: preset, official .ckpt or model directory")
    p.add_argument("model", nargs="?", default="default", help="preset name, .ckpt path or model directory (default: default)")
    p.set_defaults(func=run_info)


def run_convert(args: argparse.Namespace) -> int:
    from ..model import checkpoint

    out = checkpoint.convert(args.ckpt, args.out_dir, dtype=DTYPES.get(args.dtype), overwrite=args.overwrite)
    print(f"wrote {out} ({(out / checkpoint.WEIGHTS_FILE).stat().st_size / 1e6:.1f} MB of weights)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..model import load_model

    model = load_model(args.model)
    c = model.config
    info = {
        "name": c.name,
        "frame": f"{c.frame_width}x{c.frame_height}",
        "tokenizer": c.tokenizer.kind,
        "tokens_per_image": c.tokens_per_image,
        "tokens_per_step": c.tokens_per_step,
        "context_steps": c.context_steps,
        "image_vocab_size": c.image_vocab_size,
        "vocab_size": c.vocab_size,
        "gpt": {"n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd, "version": c.gpt.version,
                "bias": c.gpt.bias},
        "parameters": model.num_parameters(),
        "dtype": str(model.dtype).replace("torch.", ""),
        "card": model.card,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0
