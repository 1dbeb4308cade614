"""Synthetic official-format WHAM checkpoints for tests.

The pickled hyper-parameters hold instances and class references of classes that
live in modules named like WHAM's real ones (§1.4). Those modules exist only
while the file is written: the loader must read it without them.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections import OrderedDict

import torch

MODULES = {
    "pl_creation_args": "models.wham_base.pl_creation_args",
    "GPTTokenPredictor": "models.wham_token_model.gpt_token_transformer_predictor",
    "TamingVQModel": "models.vqgan.taming_vq_model",
    "VQGANModel": "models.vqgan.vqgan",
    "ActionTokenEncoder": "models.wham_token_model.token_action_encoder",
}


@contextlib.contextmanager
def fake_wham_modules(root: str):
    """Temporarily create ``<root>.models...`` modules holding WHAM-named classes."""
    created = {}

    def module(path):
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = created[name] = types.ModuleType(name)
        return sys.modules[path]

    classes = {}
    args_mod = module(f"{root}.{MODULES['pl_creation_args']}")
    cls = type("LightningModuleCreationArgs", (), {"__module__": args_mod.__name__})
    args_mod.LightningModuleCreationArgs = classes["LightningModuleCreationArgs"] = cls
    for name in ("GPTTokenPredictor", "TamingVQModel", "VQGANModel", "ActionTokenEncoder"):
        mod = module(f"{root}.{MODULES[name]}")
        c = type(name, (), {"__module__": mod.__name__})
        setattr(mod, name, c)
        classes[name] = c
    try:
        yield classes
    finally:
        for name in created:
            sys.modules.pop(name, None)


def _creation_args(classes, pl_class, pl_kwargs):
    obj = classes["LightningModuleCreationArgs"]()
    obj.pl_class = pl_class
    obj.pl_kwargs = pl_kwargs
    obj.pl_checkpoint_path = None
    obj.pl_stored_params_override = None
    return obj


def write_official_checkpoint(model, path, *, root="humanmodelling", model_size="chinchilla-251M",
                              spec_version=True, extras=True):
    """Save ``model``'s weights as an official-format Lightning checkpoint at ``path``."""
    cfg = model.config
    tok = cfg.tokenizer
    state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    if extras:  # buffers and training-only weights real checkpoints carry (§2, §14)
        S = cfg.gpt.block_size
        for i in range(cfg.n_layer):
            state[f"predictor.gpt_model.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(S, S)).view(1, 1, S, S)
        if tok.kind == "vit":
            N = tok.tokens_per_image
            for part in ("encoder", "decoder"):
                for i in range(tok.num_layers):
                    state[f"context_encoders.images.{part}.vit.{i}.attn.attn_mask"] = torch.ones(1, 1, N, N, dtype=torch.bool)
            state["context_encoders.images.patch_gan.last.weight"] = torch.randn(1, 4, 1, 1)
        else:
            state["context_encoders.images.vq_model.loss.logvar"] = torch.zeros(())
    spec = {"model_size": model_size, "seq_len": cfg.seq_len}
    if spec_version:
        spec.update(nanogpt_version=cfg.gpt.version, bias=cfg.gpt.bias)
    with fake_wham_modules(root) as classes:
        if tok.kind == "vit":
            img_spec = dict(patch_size=tok.patch_size, transf_dim=tok.transf_dim, embedding_dim=tok.embedding_dim,
                            num_layers=tok.num_layers, head_size=tok.head_size, vocab_size=tok.vocab_size,
                            commitment_cost=0.25, is_perceptual=True, use_gan=extras,
                            image_size_per_x_axis=tok.width, image_size_per_y_axis=tok.height)
            images = _creation_args(classes, classes["VQGANModel"], {"model_spec": img_spec, "ckpt_path": "None", "variant": None})
        else:
            dd = dict(double_z=False, z_channels=tok.z_channels, resolution=tok.resolution, in_channels=tok.in_channels,
                      out_ch=tok.out_ch, ch=tok.ch, ch_mult=list(tok.ch_mult), num_res_blocks=tok.num_res_blocks,
                      attn_resolutions=list(tok.attn_resolutions), dropout=tok.dropout)
            img_spec = dict(taming_n_embed=tok.n_embed, taming_embed_dim=tok.embed_dim,
                            taming_num_indices_per_axis=tok.num_indices_per_axis, taming_ddconfig=dd)
            images = _creation_args(classes, classes["TamingVQModel"], {"model_spec": img_spec, "ckpt_path": None})
        hp = {
            "predictor_args": _creation_args(classes, classes["GPTTokenPredictor"], {"model_spec": spec}),
            "context_encoder_args": {
                "images": images,
                "actions_output": _creation_args(classes, classes["ActionTokenEncoder"], {}),
            },
            "variant": {"model_spec": {"bc_loss_only": False}, "dtype": torch.float32},
        }
        ckpt = {
            "epoch": 3,
            "global_step": 1000,
            "pytorch-lightning_version": "1.9.4",
            "state_dict": state,
            "hyper_parameters": hp,
            "hparams_name": "kwargs",
            "loops": {"fit_loop": {"state_dict": {}}},
            "callbacks": {},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(8), "exp_avg_sq": torch.zeros(8)}},
                                  "param_groups": [{"lr": 1e-4, "params": [0]}]}],
            "lr_schedulers": [],
        }
        torch.save(ckpt, path)
    return path
