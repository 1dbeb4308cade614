"""The GPT against an independent float64 computation of WHAM's forward pass (§3)."""

import math

import pytest
import torch

from wham_gym.model.config import GPT_MODEL_SIZES, GPTConfig, preset
from wham_gym.model.gpt import GPT

TOL = 1e-4  # float32 model vs float64 reference, on logits of magnitude ~1-10


def reference_logits(state, cfg: GPTConfig, idx):
    """Plain float64 pre-LN GPT-2 from the state_dict alone (no code shared with gpt.py)."""
    sd = {k: v.double() for k, v in state.items()}
    B, T = idx.shape
    d, nh = cfg.n_embd, cfg.n_head
    hd = d // nh

    def ln(x, w=None, b=None):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + 1e-5)
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        return y

    def lin(x, name):
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if name + ".bias" in sd else y

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][torch.arange(T)]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        h = ln(x, sd.get(p + "ln_1.weight"), sd.get(p + "ln_1.bias"))
        qkv = lin(h, p + "attn.c_attn")
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        heads = []
        for head in range(nh):
            sl = slice(head * hd, (head + 1) * hd)
            att = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(hd)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            heads.append(att @ v[..., sl])
        x = x + lin(torch.cat(heads, -1), p + "attn.c_proj")
        h = ln(x, sd.get(p + "ln_2.weight"), sd.get(p + "ln_2.bias"))
        x = x + lin(gelu(lin(h, p + "mlp.c_fc")), p + "mlp.c_proj")
    x = ln(x, sd["transformer.ln_f.weight"], sd.get("transformer.ln_f.bias"))
    return x @ sd["transformer.wte.weight"].T


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_logits_equal_float64_reference(version, bias):
    cfg = GPTConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=97, block_size=64, bias=bias, version=version)
    torch.manual_seed(version * 10 + bias)
    gpt = GPT(cfg).eval()
    with torch.no_grad():  # larger-than-init weights so every term matters
        for p in gpt.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    idx = torch.randint(0, cfg.vocab_size, (3, 50))
    with torch.no_grad():
        ours = gpt(idx).double()
    ref = reference_logits(gpt.state_dict(), cfg, idx)
    assert ref.abs().max() > 1.0
    assert torch.allclose(ours, ref, atol=TOL * ref.abs().max().item(), rtol=0)


@pytest.mark.parametrize("version", [1, 2])
def test_state_dict_keys_follow_wham_layout(version):
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=11, block_size=6, bias=(version == 1), version=version)
    keys = set(GPT(cfg).state_dict())
    expected = {"transformer.wpe.weight", "transformer.wte.weight", "lm_head.weight", "transformer.ln_f.weight"}
    if cfg.bias:
        expected.add("transformer.ln_f.bias")
    for i in range(2):
        p = f"transformer.h.{i}."
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            expected.add(p + lin + ".weight")
            if cfg.bias:
                expected.add(p + lin + ".bias")
        if version == 1:
            expected |= {p + "ln_1.weight", p + "ln_2.weight"}
            if cfg.bias:
                expected |= {p + "ln_1.bias", p + "ln_2.bias"}
    assert keys == expected


def test_lm_head_is_tied_to_wte():
    gpt = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=11, block_size=6))
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    assert gpt.lm_head.bias is None


def test_wham_1_6b_parameter_count():
    n_layer, n_head, n_embd = GPT_MODEL_SIZES["wham-4kvocab-1.6b"]
    cfg = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=16452, block_size=5560)
    with torch.device("meta"):
        gpt = GPT(cfg)
    assert gpt.num_parameters() == 1_580_262_912
    assert preset("wham-1.6b").gpt == cfg


def test_cached_forward_equals_full_forward():
    """Prefill then one-token steps through the static cache give the full forward's logits."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=40)
    torch.manual_seed(0)
    gpt = GPT(cfg).eval()
    idx = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        full = gpt(idx)
        caches = gpt.new_caches(batch=2, length=cfg.block_size)
        S = cfg.block_size
        pos = torch.arange(20).expand(2, 20)
        mask = (torch.arange(S)[None, :] <= torch.arange(20)[:, None])[None, None].expand(2, 1, 20, S)
        steps = [gpt(idx[:, :20], pos=pos, mask=mask, caches=caches)]
        for t in range(20, 30):
            pos = torch.full((2, 1), t)
            mask = (torch.arange(S) <= t)[None, None, None].expand(2, 1, 1, S)
            steps.append(gpt(idx[:, t : t + 1], pos=pos, mask=mask[..., : t + 1], caches=caches))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True], ids=["keys (S, hd)", "keys (hd, S)"])
def test_both_key_layouts_give_the_full_forward(transposed):
    """Keys stored as (S, hd) or transposed (hd, S), written by a causal prefill, a positioned prefill and
    one-token passes that attend over the whole cache (with transposed keys: attend_cache, the compiled
    engine's pass), give the full forward's logits."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=40)
    torch.manual_seed(0)
    gpt = GPT(cfg).double().eval()
    B, S = 2, cfg.block_size
    idx = torch.randint(0, 50, (B, 30))

    def additive(allowed):
        return torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, float("-inf"))

    with torch.no_grad():
        full = gpt(idx)
        caches = gpt.new_caches(batch=B, length=S, keys_transposed=transposed)
        steps = [gpt(idx[:, :10], pos=torch.arange(10).expand(B, 10), caches=caches)]  # causal: a slice copy
        t = torch.arange(10, 20)
        mask = additive(torch.arange(20)[None, :] <= t[:, None])[None, None].expand(B, 1, 10, 20)
        steps.append(gpt(idx[:, 10:20], pos=t.expand(B, 10), mask=mask, caches=caches))  # positioned: scatter
        for t in range(20, 30):
            mask = additive(torch.arange(S) <= t)[None, None, None].expand(B, 1, 1, S)
            steps.append(gpt(idx[:, t:t + 1], pos=torch.full((B, 1), t), mask=mask, caches=caches))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-10)
    assert caches[0].k.shape == ((B, cfg.n_head, cfg.head_dim, S) if transposed else (B, cfg.n_head, S, cfg.head_dim))
    assert caches[0].keys.shape == (B, cfg.n_head, S, cfg.head_dim)


@pytest.mark.parametrize("masked", [False, True], ids=["causal", "masked"])
def test_gathered_prefill_equals_full_forward_and_fills_the_cache(masked):
    """A prefill with ``gather`` runs its last layer for the gathered positions only; its logits and every cached
    key / value equal the full forward's (both the causal path of full windows and the masked one)."""
    cfg = GPTConfig(n_layer=3, n_head=2, n_embd=16, vocab_size=50, block_size=40)
    torch.manual_seed(1)
    gpt = GPT(cfg).double().eval()
    B, T, S = 3, 20, cfg.block_size
    idx = torch.randint(0, 50, (B, T))
    gather = torch.tensor([19, 7, 12])  # a last token per row (right-padded rows end earlier)
    pos = torch.arange(T).expand(B, T)
    mask = None
    if masked:
        allowed = (torch.arange(T)[None, :] <= torch.arange(T)[:, None])[None, None].expand(B, 1, T, T)
        mask = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        full = gpt(idx)
        caches = gpt.new_caches(batch=B, length=S)
        got = gpt(idx, pos=pos, mask=mask, caches=caches, gather=gather)
        ref_caches = gpt.new_caches(batch=B, length=S)
        gpt(idx, pos=pos, mask=mask, caches=ref_caches)  # no gather: every layer over every position
    assert got.shape == (B, 1, cfg.vocab_size)
    assert torch.allclose(got[:, 0], full[torch.arange(B), gather], atol=1e-10)
    if not masked:  # and without a cache
        assert torch.allclose(gpt(idx, gather=gather)[:, 0], full[torch.arange(B), gather], atol=1e-10)
    for c, r in zip(caches, ref_caches):
        assert torch.allclose(c.k, r.k, atol=1e-12) and torch.allclose(c.v, r.v, atol=1e-12)
