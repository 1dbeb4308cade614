"""Reading official WHAM ``.ckpt`` files safely, and the project's own model format.

Official checkpoints are PyTorch Lightning pickles whose ``hyper_parameters``
hold objects of WHAM's own classes (WHAM_FORMAT.md §1). We never import or run
those: a restricted unpickler turns WHAM/Lightning globals into inert stand-ins,
lets through only tensor-rebuild and plain-data globals, and refuses the rest.
Storages are memory-mapped, so the large ``optimizer_states`` are never read.

Our own format is a directory: ``config.json`` + ``model.safetensors`` (+ ``card.json``),
loaded with safetensors alone.
"""

from __future__ import annotations

import _compat_pickle
import collections
import json
import os
import pickle
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_dir
from .config import (
    GPT_MODEL_SIZES,
    GPTConfig,
    TamingTokenizerConfig,
    ViTTokenizerConfig,
    WHAMConfig,
)
from .vocab import ACTION_VOCAB_SIZE
from .reward_model import RewardModel, RewardModelConfig
from .wham import WHAMModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
REWARD_WEIGHTS_FILE = "reward.safetensors"
REWARD_CONFIG_FILE = "reward.json"

GPT_PREFIX = "predictor.gpt_model."
IMAGES_PREFIX = "context_encoders.images."


class CheckpointError(ValueError):
    """A checkpoint file that is not what it claims to be."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------
class Stub:
    """Inert stand-in for a pickled object of a class we refuse to import.

    Records constructor args and state; ``stub_module``/``stub_name`` say what it stood for.
    """

    stub_module = ""
    stub_name = ""

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args
        self.__dict__["_kwargs"] = kwargs

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slotstate)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self):
        return f"<stub {self.stub_module}.{self.stub_name}>"


class StubDict(dict):
    """Stand-in for dict subclasses such as Lightning's AttributeDict."""

    stub_module = ""
    stub_name = ""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


_STUB_ROOTS = ("humanmodelling", "wham", "pytorch_lightning", "lightning", "lightning_fabric", "omegaconf")
_stub_classes: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        base = StubDict if name in ("AttributeDict", "DictConfig") else Stub
        _stub_classes[key] = type(name, (base,), {"stub_module": module, "stub_name": name, "__module__": module})
    return _stub_classes[key]


def _latin1_bytes(text, encoding="latin1", errors="strict") -> bytes:
    """The one use pickle protocol 2 (``torch.save``'s) makes of ``_codecs.encode``.

    Every ``bytes`` object (numpy's array and scalar payloads included) is pickled
    as ``_codecs.encode(str, "latin1")``. Only that form is accepted: another codec
    name would make the codec registry import a module, so it is refused.
    """
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"refused _codecs.encode({type(text).__name__}, {encoding!r}): only the latin1 form that "
            "pickle protocol 2 writes for bytes is allowed")
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """``bytes()`` as protocol 2 pickles ``b""``; any argument (a size to allocate) is refused."""
    if args:
        raise pickle.UnpicklingError("refused builtins.bytes with arguments: protocol 2 writes only bytes()")
    return b""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("_codecs", "encode"): _latin1_bytes,
        ("builtins", "bytes"): _empty_bytes,
        # Paths in hyper-parameters (e.g. a tokenizer's ckpt_path) become pure paths: no file access.
        ("pathlib", "PosixPath"): PurePosixPath,
        ("pathlib", "PurePosixPath"): PurePosixPath,
        ("pathlib", "WindowsPath"): PureWindowsPath,
        ("pathlib", "PureWindowsPath"): PureWindowsPath,
        ("pathlib", "Path"): PurePosixPath,
        ("pathlib._local", "PosixPath"): PurePosixPath,  # Python >= 3.13 pickles paths from here
        ("pathlib._local", "WindowsPath"): PureWindowsPath,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        # numpy metadata (dtypes, scalars, small arrays) pickled into hyper-parameters
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = np._core.multiarray.scalar
        allowed[(mod, "_reconstruct")] = np._core.multiarray._reconstruct
    for dtype_name in dir(torch):
        value = getattr(torch, dtype_name, None)
        if isinstance(value, torch.dtype):
            allowed[("torch", dtype_name)] = value
    for np_name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
        allowed[("numpy", np_name)] = getattr(np, np_name)
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Maps WHAM/Lightning globals to stubs, allows tensor and plain-data globals, refuses all else."""

    def find_class(self, module: str, name: str):
        # torch.save writes protocol 2, which names Python 3 modules the Python 2 way ('__builtin__').
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.split(".")[0] in _STUB_ROOTS:
            return _stub_class(module, name)
        raise pickle.UnpicklingError(
            f"refused global {module}.{name}: not a tensor, plain data or WHAM class "
            "(the checkpoint may be foreign or malicious)"
        )


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` expects; torch supplies zip and storage handling."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "wham_gym_restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()


def read_official(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle an official checkpoint without running code from it; storages memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            path,
            "not a PyTorch zip checkpoint (WHAM's .ckpt files are torch.save zip archives); "
            "the file may be truncated, an LFS pointer, or another format",
        )
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule,
                         weights_only=False, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(path, str(exc)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(path, f"unreadable checkpoint ({exc})") from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(path, f"expected a Lightning checkpoint dict with 'state_dict', got {keys}")
    return obj


# --------------------------------------------------------------------------
# Config from hyper_parameters, cross-checked against the weights
# --------------------------------------------------------------------------
def _attr(obj, key, default=None):
    if isinstance(obj, dict):
        return obj.get(key, default)
    return obj.__dict__.get(key, default) if hasattr(obj, "__dict__") else default


def _class_name(creation_args) -> str:
    cls = _attr(creation_args, "pl_class")
    return getattr(cls, "stub_name", None) or getattr(cls, "__qualname__", "") or str(cls)


def _tokenizer_config(path, images_args, state: dict[str, torch.Tensor]):
    cls = _class_name(images_args)
    kwargs = _attr(images_args, "pl_kwargs") or {}
    has_vit = f"{IMAGES_PREFIX}encoder.proj1.weight" in state
    has_taming = f"{IMAGES_PREFIX}vq_model.quantize.embedding.weight" in state
    if cls == "VQGANModel" or (not cls and has_vit):
        if not has_vit:
            raise CheckpointError(path, "hyper_parameters name a ViT tokenizer (VQGANModel) but its weights are missing")
        spec = kwargs.get("model_spec")
        variant = kwargs.get("variant")
        if spec is None and isinstance(variant, dict):
            spec = variant.get("model_spec")
        if not isinstance(spec, dict):
            raise CheckpointError(path, "VQGANModel creation args carry no model_spec")
        size_src = spec if variant is None else variant  # WHAM's rule (§1.6)
        try:
            width, height = int(size_src["image_size_per_x_axis"]), int(size_src["image_size_per_y_axis"])
        except KeyError:
            raise CheckpointError(path, "VQGANModel spec has no image_size_per_x_axis / _y_axis") from None
        emb = state[f"{IMAGES_PREFIX}vq_vae._embedding.weight"]
        proj = state[f"{IMAGES_PREFIX}encoder.proj1.weight"]
        # Keys are context_encoders.images.encoder.vit.{i}....: the layer index is the fifth field.
        n_layers = len({k.split(".")[4] for k in state if k.startswith(f"{IMAGES_PREFIX}encoder.vit.")})
        cfg = ViTTokenizerConfig(
            width=width, height=height, patch_size=int(spec["patch_size"]), transf_dim=int(spec["transf_dim"]),
            embedding_dim=int(spec["embedding_dim"]), num_layers=int(spec["num_layers"]),
            head_size=int(spec["head_size"]), vocab_size=int(spec["vocab_size"]),
        )
        _expect(path, "ViT codebook", tuple(emb.shape), (cfg.vocab_size, cfg.embedding_dim))
        _expect(path, "ViT proj1", tuple(proj.shape), (cfg.transf_dim, 3 * cfg.patch_size**2))
        _expect(path, "ViT layer count", n_layers, cfg.num_layers)
        _expect(path, "ViT pos_embeds", tuple(state[f"{IMAGES_PREFIX}encoder.pos_embeds.weight"].shape),
                (cfg.tokens_per_image, cfg.transf_dim))
        return cfg
    if cls == "TamingVQModel" or (not cls and has_taming):
        if not has_taming:
            raise CheckpointError(path, "hyper_parameters name a Taming tokenizer but its weights are missing")
        spec = kwargs.get("model_spec") or {}
        dd = dict(spec.get("taming_ddconfig") or {})
        if dd.get("double_z"):
            raise CheckpointError(path, "taming_ddconfig.double_z is true, which WHAM's tokenizer cannot use")
        try:
            cfg = TamingTokenizerConfig(
                n_embed=int(spec["taming_n_embed"]), embed_dim=int(spec["taming_embed_dim"]),
                num_indices_per_axis=int(spec["taming_num_indices_per_axis"]),
                z_channels=int(dd["z_channels"]), resolution=int(dd["resolution"]),
                in_channels=int(dd.get("in_channels", 3)), out_ch=int(dd.get("out_ch", 3)), ch=int(dd["ch"]),
                ch_mult=tuple(dd["ch_mult"]), num_res_blocks=int(dd["num_res_blocks"]),
                attn_resolutions=tuple(dd.get("attn_resolutions", ())), dropout=float(dd.get("dropout", 0.0)),
                resamp_with_conv=bool(dd.get("resamp_with_conv", True)),
            )
        except KeyError as exc:
            raise CheckpointError(path, f"Taming model_spec lacks {exc}") from None
        emb = state[f"{IMAGES_PREFIX}vq_model.quantize.embedding.weight"]
        _expect(path, "Taming codebook", tuple(emb.shape), (cfg.n_embed, cfg.embed_dim))
        return cfg
    raise CheckpointError(path, f"unknown image tokenizer class {cls!r} (expected VQGANModel or TamingVQModel)")


def _expect(path, what: str, got, expected) -> None:
    if got != expected:
        raise CheckpointError(path, f"{what}: weights say {got}, hyper_parameters say {expected}")


def config_from_official(path, ckpt: dict[str, Any]) -> WHAMConfig:
    """Rebuild a WHAMConfig from ``hyper_parameters``; facts WHAM leaves open come from the weights."""
    state = ckpt["state_dict"]
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "predictor_args" not in hp or "context_encoder_args" not in hp:
        raise CheckpointError(path, "no WHAM hyper_parameters (predictor_args / context_encoder_args) in checkpoint")
    enc_args = hp["context_encoder_args"]
    order = list(enc_args.keys()) if isinstance(enc_args, dict) else []
    if order != ["images", "actions_output"]:
        raise CheckpointError(path, f"context_encoder_args modality order {order}; wham-gym supports ['images', 'actions_output']")
    if isinstance(enc_args["images"], (tuple, list)):
        raise CheckpointError(path, "separate image encoder/decoder creation args are not supported")

    spec = (_attr(hp["predictor_args"], "pl_kwargs") or {}).get("model_spec")
    if not isinstance(spec, dict) or "model_size" not in spec or "seq_len" not in spec:
        raise CheckpointError(path, "predictor model_spec lacks model_size / seq_len")
    if spec["model_size"] not in GPT_MODEL_SIZES:
        raise CheckpointError(path, f"unknown GPT model_size {spec['model_size']!r}; known: {', '.join(GPT_MODEL_SIZES)}")
    n_layer, n_head, n_embd = GPT_MODEL_SIZES[spec["model_size"]]

    tok = _tokenizer_config(path, enc_args["images"], state)
    wte, wpe = state.get(f"{GPT_PREFIX}transformer.wte.weight"), state.get(f"{GPT_PREFIX}transformer.wpe.weight")
    if wte is None or wpe is None:
        raise CheckpointError(path, "state_dict has no predictor.gpt_model.transformer.wte/wpe weights")
    # [U] facts, detected from the weights; hyper-parameters, when present, must agree.
    version = 1 if f"{GPT_PREFIX}transformer.h.0.ln_1.weight" in state else 2
    bias = f"{GPT_PREFIX}transformer.h.0.attn.c_attn.bias" in state
    if "nanogpt_version" in spec:
        _expect(path, "nanogpt_version", version, int(spec["nanogpt_version"]))
    if "bias" in spec:
        _expect(path, "bias", bias, bool(spec["bias"]))
    layers = len({k.split(".")[4] for k in state if k.startswith(f"{GPT_PREFIX}transformer.h.")})
    seq_len = int(spec["seq_len"])
    gpt = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=tok.vocab_size + ACTION_VOCAB_SIZE,
                    block_size=seq_len * (tok.tokens_per_image + 16), bias=bias, version=version)
    _expect(path, "GPT layers", layers, n_layer)
    _expect(path, "GPT wte (vocab, n_embd)", tuple(wte.shape), (gpt.vocab_size, n_embd))
    _expect(path, "GPT wpe (block_size, n_embd)", tuple(wpe.shape), (gpt.block_size, n_embd))
    return WHAMConfig(gpt=gpt, tokenizer=tok, seq_len=seq_len, name=Path(path).stem,
                      extra={"model_size": spec["model_size"]})


# Keys present in official checkpoints that are not part of the inference graph (§14).
def _ignorable(key: str) -> bool:
    if key.startswith(GPT_PREFIX):
        return key.endswith(".attn.bias")  # nanoGPT's causal-mask buffer, not c_attn.bias
    if key.startswith(IMAGES_PREFIX):
        rest = key[len(IMAGES_PREFIX):]
        return (rest.endswith("attn.attn_mask") or rest.startswith(("patch_gan", "target_patchgan", "loss.", "vq_model.loss.", "lpips")))
    return False


def load_official(path, device="cpu", dtype=torch.float32):
    """Build a :class:`WHAMModel` from an official ``.ckpt``; returns (model, report)."""

    ckpt = read_official(path)
    config = config_from_official(path, ckpt)
    state = ckpt["state_dict"]
    with torch.device("meta"):
        model = WHAMModel(config)
    wanted = model.state_dict()
    report = {"missing": [], "unexpected": [], "ignored": []}
    tensors = {}
    for key, value in state.items():
        if key in wanted:
            if tuple(value.shape) != tuple(wanted[key].shape):
                raise CheckpointError(path, f"{key}: shape {tuple(value.shape)}, model expects {tuple(wanted[key].shape)}")
            tensors[key] = value
        elif _ignorable(key):
            report["ignored"].append(key)
        else:
            report["unexpected"].append(key)
    report["missing"] = [k for k in wanted if k not in tensors and k != "predictor.gpt_model.lm_head.weight"]
    if report["missing"]:
        raise CheckpointError(path, f"missing weights: {', '.join(report['missing'][:6])}" +
                              (" ..." if len(report["missing"]) > 6 else ""))
    model = model.to_empty(device=device).to(dtype=dtype)
    model.load_state_dict(tensors, strict=False)  # copies out of the memory-mapped file
    model.gpt.lm_head.weight = model.gpt.transformer.wte.weight  # re-tie after to_empty
    model.card = {"name": config.name, "official": True, "source": str(path), "format": "wham-official-ckpt",
                  "license": "Microsoft Research License: keep the watermark and provenance on generated media"}
    return model.eval(), report


# --------------------------------------------------------------------------
# Own format
# --------------------------------------------------------------------------
PATH_FIELDS = ("data", "source", "converted_from")  # card fields naming where a model came from


def provenance_path(path, model_dir) -> str:
    """A path as a card records it: relative to ``model_dir`` when it lies inside it, else only its
    last component (``/work/data/dtc`` -> ``dtc``), so no card carries one machine's paths."""
    full, base = os.path.abspath(os.fspath(path)), os.path.abspath(os.fspath(model_dir))
    if full == base or full.startswith(base.rstrip(os.sep) + os.sep):
        return Path(os.path.relpath(full, base)).as_posix()
    return os.path.basename(full.rstrip(os.sep)) or str(path)


def _card_paths(card: dict, model_dir) -> dict:
    """``card`` with its provenance paths (:data:`PATH_FIELDS`) made machine-independent."""
    out = dict(card)
    for key in PATH_FIELDS:
        value = out.get(key)
        if isinstance(value, (str, os.PathLike)) and os.fspath(value):
            out[key] = provenance_path(value, model_dir)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value):
            out[key] = [provenance_path(v, model_dir) for v in value]
    return out


def save_model(model, out_dir, *, dtype: torch.dtype | None = None, card: dict | None = None,
               overwrite: bool = False) -> Path:
    """Write ``config.json`` + ``model.safetensors`` + ``card.json`` atomically (temp dir + rename).

    The card's provenance paths (``data``, ``source``, ``converted_from``) are recorded
    relative to ``out_dir``, or as a file or folder name when they lie outside it.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite, hint="pass overwrite=True (--overwrite)") as tmp:
        tensors = {}
        for key, value in model.state_dict().items():
            if key == "predictor.gpt_model.lm_head.weight" or key.startswith("reward_model."):
                continue  # lm_head is tied to wte (safetensors refuses shared storage); reward model has its own file
            value = value.detach().to("cpu")
            tensors[key] = (value.to(dtype) if dtype is not None and value.is_floating_point() else value).contiguous()
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "wham-gym/1"})
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
        (tmp / CARD_FILE).write_text(json.dumps(_card_paths({**model.card, **(card or {})}, out_dir), indent=2,
                                                default=str))
        reward = getattr(model, "reward_model", None)
        if reward is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in reward.state_dict().items()},
                      str(tmp / REWARD_WEIGHTS_FILE))
            (tmp / REWARD_CONFIG_FILE).write_text(json.dumps(reward.config.to_dict(), indent=2))
        for f in tmp.iterdir():
            f.chmod(0o644)  # a model directory is meant to be shared
    return out_dir


def load_own(path, device="cpu", dtype=None):
    """Load a model directory written by :func:`save_model` (no pickle involved)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a wham-gym model directory (no {name})")
    try:
        config = WHAMConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(path / CONFIG_FILE, f"invalid JSON ({exc})") from None
    try:
        tensors = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(path / WEIGHTS_FILE, f"unreadable safetensors file ({exc})") from None
    with torch.device("meta"):
        model = WHAMModel(config)
    stored = tensors.get(f"{GPT_PREFIX}transformer.wte.weight")
    model = model.to_empty(device=device).to(dtype=dtype or (stored.dtype if stored is not None else torch.float32))
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if k != "predictor.gpt_model.lm_head.weight"]
    if missing or result.unexpected_keys:
        raise CheckpointError(path / WEIGHTS_FILE, f"weights do not match config.json: missing {missing[:4]}, "
                              f"unexpected {result.unexpected_keys[:4]}")
    model.gpt.lm_head.weight = model.gpt.transformer.wte.weight
    card_path = path / CARD_FILE
    model.card = json.loads(card_path.read_text()) if card_path.is_file() else {"name": config.name}
    model.model_dir = str(path)  # files the card names (e.g. prompt episodes) are relative to it
    if (path / REWARD_WEIGHTS_FILE).is_file():
        model.reward_model = _load_reward_model(path, device)
    return model.eval()


def _load_reward_model(path: Path, device):
    from safetensors.torch import load_file

    rm = RewardModel(RewardModelConfig.from_dict(json.loads((path / REWARD_CONFIG_FILE).read_text())))
    rm.load_state_dict(load_file(str(path / REWARD_WEIGHTS_FILE)))
    return rm.to(device).eval()


def convert(ckpt_path, out_dir, *, dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Official ``.ckpt`` -> own format directory, once; the result loads with no pickle."""
    model, report = load_official(ckpt_path)
    card = {"converted_from": os.fspath(ckpt_path), "ignored_keys": len(report["ignored"]),  # save_model: its name
            "unexpected_keys": report["unexpected"]}
    return save_model(model, out_dir, dtype=dtype, card=card, overwrite=overwrite)
