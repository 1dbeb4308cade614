"""The peer a user would pick instead of the engine: Hugging Face ``transformers`` GPT-2 generation.

WHAM's predictor is a nanoGPT (WHAM_FORMAT.md §3), i.e. GPT-2's architecture: learned absolute
positions, pre-norm blocks, tanh GELU, an lm_head tied to the token embedding. :func:`to_gpt2` maps
our weights onto ``transformers.GPT2LMHeadModel`` (version-2 blocks' non-affine norms become unit
weights and zero biases; ``bias=False`` models get zero biases), so the peer computes the same
function. :func:`generate_frames` dreams the way a ``transformers`` user would
(``wham_gym.measure.benchmark.run_transformers`` times it): every env-step
one ``generate`` call per batch of N windows, greedy, with the library's static KV cache, the full
window (``context_steps - 1`` steps of image and action tokens) as the prompt and one frame's image
tokens as the new tokens, each kept in its valid range by a logits processor (what the engine's
sampler does), so the tokens equal the engine's argmax tokens (tests/test_peer.py).

``transformers`` is optional (``pip install transformers``); it is imported only here, when used.
"""

from __future__ import annotations

import torch

from ..controller import to_wham
from ..model.vocab import action_tokens


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("the transformers peer needs Hugging Face transformers: pip install transformers") from None
    return transformers


def to_gpt2(gpt):
    """A ``transformers.GPT2LMHeadModel`` computing the same logits as our :class:`~wham_gym.model.gpt.GPT`.

    GPT-2's ``Conv1D`` stores weights as (in, out), the transpose of ``nn.Linear``'s.
    """
    tf = require_transformers()
    c = gpt.config
    weight = gpt.transformer.wte.weight
    cfg = tf.GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                        pad_token_id=0, tie_word_embeddings=True, use_cache=True)
    peer = tf.GPT2LMHeadModel(cfg).to(device=weight.device, dtype=weight.dtype).eval()
    ours = gpt.state_dict()

    def norm(dst, prefix):  # absent keys: a non-affine norm (unit weight) or a bias-free one (zero bias)
        dst.weight.data.copy_(ours.get(prefix + ".weight", torch.ones_like(dst.weight)))
        dst.bias.data.copy_(ours.get(prefix + ".bias", torch.zeros_like(dst.bias)))

    def linear(dst, prefix):
        dst.weight.data.copy_(ours[prefix + ".weight"].t())
        dst.bias.data.copy_(ours.get(prefix + ".bias", torch.zeros_like(dst.bias)))

    with torch.no_grad():
        peer.transformer.wte.weight.copy_(ours["transformer.wte.weight"])
        peer.transformer.wpe.weight.copy_(ours["transformer.wpe.weight"])
        for i, block in enumerate(peer.transformer.h):
            p = f"transformer.h.{i}"
            norm(block.ln_1, p + ".ln_1")
            norm(block.ln_2, p + ".ln_2")
            linear(block.attn.c_attn, p + ".attn.c_attn")
            linear(block.attn.c_proj, p + ".attn.c_proj")
            linear(block.mlp.c_fc, p + ".mlp.c_fc")
            linear(block.mlp.c_proj, p + ".mlp.c_proj")
        norm(peer.transformer.ln_f, "transformer.ln_f")
    if peer.lm_head.weight.data_ptr() != peer.transformer.wte.weight.data_ptr():  # untied by a config default
        peer.lm_head.weight = peer.transformer.wte.weight
    return peer


class ValidRange:
    """A ``transformers`` logits processor: the k-th new token of a frame may only take the ids WHAM allows
    at position k of a step (the engine's ranges; e.g. never codebook index 0 as a frame's first token)."""

    def __init__(self, vocab, prompt_len: int, device):
        ids = torch.arange(vocab.size, device=device)
        lo, hi = vocab.ranges(device=device)
        self.outside = (ids[None, :] < lo[:, None]) | (ids[None, :] > hi[:, None])  # (tokens_per_step, V)
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores):
        k = input_ids.shape[1] - self.prompt_len
        return scores.masked_fill(self.outside[k], float("-inf"))


def window_ids(model, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Token ids of full windows: image tokens (N, P, tpi) and controller actions (N, P, 16), the last being
    the action the next frame follows, interleaved as the engine prefills them -> (N, P * tokens_per_step)."""
    ids = action_tokens(to_wham(actions.float()))
    return model.vocab.interleave(tokens.long(), ids)


@torch.no_grad()
def generate_frames(peer, model, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """One frame's image tokens (N, tpi) for each window, greedy, by ``peer.generate`` with a static cache."""
    tf = require_transformers()
    prompt = window_ids(model, tokens, actions).to(peer.device)
    tpi = model.config.tokens_per_image
    out = peer.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tpi, min_new_tokens=tpi,
        do_sample=False, cache_implementation="static", pad_token_id=0,
        logits_processor=tf.LogitsProcessorList([ValidRange(model.vocab, prompt.shape[1], prompt.device)]))
    return out[:, prompt.shape[1]:]
