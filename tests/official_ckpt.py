"""Synthetic official-format WHAM checkpoints for tests, as realistic as the released files.

The pickled hyper-parameters hold instances and class references of classes that
live in modules named like WHAM's real ones (§1.4). Those modules exist only
while the file is written: the loader must read it without them. Like checkpoints
written by WHAM's own code with Lightning 1.9.4 (WHAM_FORMAT.md, addendum): pickle
protocol 2 (so every ``bytes`` goes through ``_codecs.encode``), numpy scalars and
arrays and ``pathlib`` paths in ``hyper_parameters``, Adam state for every
parameter, and ``TensorSpace`` objects when asked.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from pathlib import PosixPath

MODULES = {
    "pl_creation_args": "models.wham_base.pl_creation_args",
    "GPTTokenPredictor": "models.wham_token_model.gpt_token_transformer_predictor",
    "TamingVQModel": "models.vqgan.taming_vq_model",
    "VQGANModel": "models.vqgan.vqgan",
    "ActionTokenEncoder": "models.wham_token_model.token_action_encoder",
    "TensorSpace": "models.wham_base.tensor_spaces",
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
    for name in ("GPTTokenPredictor", "TamingVQModel", "VQGANModel", "ActionTokenEncoder", "TensorSpace"):
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


def _tensor_space(classes, shape, dtype, low=None, high=None):
    space = classes["TensorSpace"]()
    space.__dict__.update(_shape=shape, _ndim=len(shape), _dtype=dtype, _low=low, _high=high, device=None)
    return space


def _adam_state(state_dict):
    """Lightning's ``optimizer_states``: one Adam entry per trainable tensor, as a real run leaves."""
    params = [v for k, v in state_dict.items() if k.startswith("predictor.") and not k.endswith(".attn.bias")]
    return [{
        "state": {i: {"step": torch.tensor(1000.0), "exp_avg": torch.randn_like(v) * 1e-3,
                      "exp_avg_sq": torch.rand_like(v) * 1e-6} for i, v in enumerate(params)},
        "param_groups": [{"lr": np.float64(3e-4), "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1,
                          "amsgrad": False, "params": list(range(len(params)))}],
    }]


def write_official_checkpoint(model, path, *, root="humanmodelling", model_size="chinchilla-251M",
                              spec_version=True, extras=True, spaces=False):
    """Save ``model``'s weights as an official-format Lightning checkpoint at ``path``.

    ``spaces``: also pickle ``TensorSpace`` objects into the predictor's kwargs, as when
    a predictor was itself loaded from a checkpoint during training.
    """
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
            images = _creation_args(classes, classes["VQGANModel"], {
                "model_spec": img_spec, "ckpt_path": PosixPath("/mnt/checkpoints/vqgan/last.ckpt"), "variant": None})
        else:
            dd = dict(double_z=False, z_channels=tok.z_channels, resolution=tok.resolution, in_channels=tok.in_channels,
                      out_ch=tok.out_ch, ch=tok.ch, ch_mult=list(tok.ch_mult), num_res_blocks=tok.num_res_blocks,
                      attn_resolutions=list(tok.attn_resolutions), dropout=tok.dropout)
            img_spec = dict(taming_n_embed=tok.n_embed, taming_embed_dim=tok.embed_dim,
                            taming_num_indices_per_axis=tok.num_indices_per_axis, taming_ddconfig=dd)
            images = _creation_args(classes, classes["TamingVQModel"], {"model_spec": img_spec, "ckpt_path": None})
        predictor_kwargs = {"model_spec": spec}
        if spaces:
            n = tok.tokens_per_image
            predictor_kwargs["context_space"] = {
                "images": _tensor_space(classes, (n,), torch.long, torch.zeros(n, dtype=torch.long),
                                        torch.full((n,), tok.vocab_size - 1, dtype=torch.long)),
                "actions_output": _tensor_space(classes, (16,), torch.long),
            }
        hp = {
            "predictor_args": _creation_args(classes, classes["GPTTokenPredictor"], predictor_kwargs),
            "context_encoder_args": {
                "images": images,
                "actions_output": _creation_args(classes, classes["ActionTokenEncoder"], {}),
            },
            # A training config as real runs leave it: numpy scalars and arrays, paths, a dtype.
            "variant": {
                "model_spec": {"bc_loss_only": False, "dropout": np.float64(0.0), "seq_len": np.int64(cfg.seq_len)},
                "dtype": torch.float32,
                "data_path": PosixPath("/mnt/data/bleeding-edge/train"),
                "lr": np.float32(3e-4),
                "image_mean": np.array([0.485, 0.456, 0.406]),
                "stick_bins": np.linspace(-1.0, 1.0, 11, dtype=np.float32),
                "seed": np.int64(1337),
                "empty": b"",
                "device": torch.device("cpu"),
            },
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
            "optimizer_states": _adam_state(state),
            "lr_schedulers": [{"last_epoch": 1000, "_step_count": 1001, "base_lrs": [np.float64(3e-4)]}],
        }
        torch.save(ckpt, path, pickle_protocol=2)  # torch's default, stated: what WHAM's files use
    return path
