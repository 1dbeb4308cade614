"""One description of a WHAM model: GPT, image tokenizer, token layout, presets.

Field names follow WHAM's own hyper-parameters (WHAM_FORMAT.md §1.6, §3) so a
config read from an official checkpoint and one written by us look alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..controller import ACTION_DIM
from .vocab import ACTION_VOCAB_SIZE

# WHAM's GPT_MODEL_SIZES (§3): model_size key -> (n_layer, n_head, n_embd).
GPT_MODEL_SIZES = {
    "chinchilla-251M": (16, 16, 1024),
    "chinchilla-1018M": (23, 14, 1792),
    "wham-4kvocab-1.6b": (24, 18, 2304),
    "wham-3b": (30, 24, 3072),
}


@dataclass
class GPTConfig:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int
    bias: bool = True
    version: int = 1  # nanoGPT block version: 1 (affine LayerNorms) or 2 (non-affine ln_1/ln_2)

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.version not in (1, 2):
            raise ValueError(f"nanogpt version must be 1 or 2, got {self.version}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class ViTTokenizerConfig:
    """ViT-VQGAN (WHAM's ``VQGANModel``), §5."""

    width: int  # image_size_per_x_axis
    height: int  # image_size_per_y_axis
    patch_size: int
    transf_dim: int
    embedding_dim: int
    num_layers: int
    head_size: int
    vocab_size: int

    kind = "vit"

    def __post_init__(self):
        if self.transf_dim % self.head_size:
            raise ValueError(f"transf_dim ({self.transf_dim}) must be divisible by head_size ({self.head_size})")

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patches after zero-padding to a multiple of the patch size."""
        p = self.patch_size
        return -(-self.height // p), -(-self.width // p)

    @property
    def tokens_per_image(self) -> int:
        rows, cols = self.grid
        return rows * cols


@dataclass
class TamingTokenizerConfig:
    """Taming-transformers VQGAN (WHAM's ``TamingVQModel``), §4. Square images."""

    n_embed: int  # codebook size K
    embed_dim: int
    num_indices_per_axis: int
    z_channels: int
    resolution: int
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True

    kind = "taming"

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        side = self.resolution // 2 ** (len(self.ch_mult) - 1)
        if side != self.num_indices_per_axis:
            raise ValueError(
                f"taming latent side resolution/2^(levels-1) = {side} must equal "
                f"num_indices_per_axis = {self.num_indices_per_axis}"
            )

    @property
    def width(self) -> int:
        return self.resolution

    @property
    def height(self) -> int:
        return self.resolution

    @property
    def vocab_size(self) -> int:
        return self.n_embed

    @property
    def tokens_per_image(self) -> int:
        return self.num_indices_per_axis**2


TokenizerConfig = ViTTokenizerConfig | TamingTokenizerConfig


@dataclass
class WHAMConfig:
    gpt: GPTConfig
    tokenizer: TokenizerConfig
    seq_len: int = 10  # WHAM's context in steps (model_spec["seq_len"])
    name: str = "wham"
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. model_size, provenance

    def __post_init__(self):
        expected_vocab = self.image_vocab_size + ACTION_VOCAB_SIZE
        if self.gpt.vocab_size != expected_vocab:
            raise ValueError(
                f"GPT vocab_size {self.gpt.vocab_size} != image vocab {self.image_vocab_size} "
                f"+ {ACTION_VOCAB_SIZE} action tokens = {expected_vocab}"
            )
        if self.gpt.block_size != self.seq_len * self.tokens_per_step:
            raise ValueError(
                f"GPT block_size {self.gpt.block_size} != seq_len {self.seq_len} x "
                f"tokens_per_step {self.tokens_per_step} = {self.seq_len * self.tokens_per_step}"
            )

    # The surface the rest of wham-gym reads.
    @property
    def frame_height(self) -> int:
        return self.tokenizer.height

    @property
    def frame_width(self) -> int:
        return self.tokenizer.width

    @property
    def tokens_per_image(self) -> int:
        return self.tokenizer.tokens_per_image

    @property
    def tokens_per_step(self) -> int:
        return self.tokens_per_image + ACTION_DIM

    @property
    def context_steps(self) -> int:
        return self.seq_len

    @property
    def image_vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def action_vocab_size(self) -> int:
        return ACTION_VOCAB_SIZE

    @property
    def vocab_size(self) -> int:
        return self.gpt.vocab_size

    @property
    def n_layer(self) -> int:
        return self.gpt.n_layer

    @property
    def n_head(self) -> int:
        return self.gpt.n_head

    @property
    def n_embd(self) -> int:
        return self.gpt.n_embd

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "wham-gym/1",
            "name": self.name,
            "seq_len": self.seq_len,
            "gpt": dataclasses.asdict(self.gpt),
            "tokenizer": {"kind": self.tokenizer.kind, **dataclasses.asdict(self.tokenizer)},
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WHAMConfig":
        try:
            tok = dict(d["tokenizer"])
            kind = tok.pop("kind")
            tok_cls = {"vit": ViTTokenizerConfig, "taming": TamingTokenizerConfig}[kind]
            return cls(
                gpt=GPTConfig(**d["gpt"]),
                tokenizer=tok_cls(**tok),
                seq_len=int(d["seq_len"]),
                name=d.get("name", "wham"),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed wham-gym model config: {exc!r}") from exc


def make_config(
    tokenizer: TokenizerConfig,
    *,
    n_layer: int,
    n_head: int,
    n_embd: int,
    seq_len: int = 10,
    bias: bool = True,
    version: int = 1,
    name: str = "wham",
    **extra,
) -> WHAMConfig:
    """Build a WHAMConfig, deriving vocab and block size from the tokenizer like WHAM does (§7)."""
    tokens_per_step = tokenizer.tokens_per_image + ACTION_DIM
    gpt = GPTConfig(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=tokenizer.vocab_size + ACTION_VOCAB_SIZE,
        block_size=seq_len * tokens_per_step,
        bias=bias,
        version=version,
    )
    return WHAMConfig(gpt=gpt, tokenizer=tokenizer, seq_len=seq_len, name=name, extra=dict(extra))


# The 1.6B's ViT tokenizer: p=10 at 300x180 (540 tokens) and K=16384 follow from WHAM's
# numbers (§5); transf_dim, embedding_dim, num_layers and head_size are unpublished, so
# these values are our guess for benchmarking only. Official checkpoints carry their own.
WHAM_VIT_300x180 = dict(
    width=300, height=180, patch_size=10, transf_dim=1024, embedding_dim=32,
    num_layers=12, head_size=64, vocab_size=16384,
)


def _wham_1_6b() -> WHAMConfig:
    n_layer, n_head, n_embd = GPT_MODEL_SIZES["wham-4kvocab-1.6b"]
    return make_config(ViTTokenizerConfig(**WHAM_VIT_300x180), n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, name="wham-1.6b", model_size="wham-4kvocab-1.6b")


def _wham_200m() -> WHAMConfig:
    # The 200M's tokenizer is unknown (§5.1); we give it the 1.6B's ViT at 300x180.
    n_layer, n_head, n_embd = GPT_MODEL_SIZES["chinchilla-251M"]
    return make_config(ViTTokenizerConfig(**WHAM_VIT_300x180), n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, name="wham-200m", model_size="chinchilla-251M")


def _tiny() -> WHAMConfig:
    tok = ViTTokenizerConfig(width=300, height=180, patch_size=30, transf_dim=32, embedding_dim=8,
                             num_layers=1, head_size=16, vocab_size=64)
    return make_config(tok, n_layer=2, n_head=2, n_embd=32, name="tiny")


def _tiny_taming() -> WHAMConfig:
    tok = TamingTokenizerConfig(n_embed=32, embed_dim=8, num_indices_per_axis=8, z_channels=8,
                                resolution=16, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                                attn_resolutions=(8,))
    return make_config(tok, n_layer=2, n_head=2, n_embd=32, name="tiny-taming")


PRESETS = {
    "wham-1.6b": _wham_1_6b,
    "wham-200m": _wham_200m,
    "tiny": _tiny,
    "tiny-taming": _tiny_taming,
}


def preset(name: str) -> WHAMConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
