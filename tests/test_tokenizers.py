"""WHAM's two image tokenizers against WHAM_FORMAT.md §2.3/§2.4 (keys) and §4/§5 (maths).

The reference computations here are written independently of the modules, with plain
torch ops in float64 on the modules' own weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wham_gym.model.config import TamingTokenizerConfig, ViTTokenizerConfig, preset
from wham_gym.model.taming_vqgan import TamingVQGAN
from wham_gym.model.vit_vqgan import ViTVQGAN, patchify, unpatchify

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# 55x35 at p=10 pads 5 columns and 5 rows: grid 4x6 = 24 tokens.
VIT_PADDED = ViTTokenizerConfig(width=55, height=35, patch_size=10, transf_dim=32, embedding_dim=8,
                                num_layers=2, head_size=16, vocab_size=64)
# Three levels (16, 8, 4), attention only at 8, width changes 32->64 (nin_shortcut), two blocks.
TAMING_3LVL = TamingTokenizerConfig(n_embed=16, embed_dim=4, num_indices_per_axis=4, z_channels=6,
                                    resolution=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=2,
                                    attn_resolutions=(8,))


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    """Non-trivial weights everywhere, including norm gains/biases (defaults 1/0 hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() == 1 and ("norm" in name or "ln" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif "pos_embeds" in name or "embedding" in name:
                p.copy_(noise)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(noise * (scale if p.dim() == 1 else 1 / math.sqrt(fan_in)))
    return module.eval()


def random_images(n, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# -- expected state_dict layouts, straight from the §2.3 / §2.4 tables -----------------


def expected_vit_keys(cfg: ViTTokenizerConfig) -> dict:
    tf, e, k, p = cfg.transf_dim, cfg.embedding_dim, cfg.vocab_size, cfg.patch_size
    n = math.ceil(cfg.width / p) * math.ceil(cfg.height / p)
    keys = {"vq_vae._embedding.weight": (k, e)}
    for side, (d_in, d_out) in {"encoder": (3 * p * p, e), "decoder": (e, 3 * p * p)}.items():
        keys[f"{side}.proj1.weight"] = (tf, d_in)
        keys[f"{side}.proj1.bias"] = (tf,)
        keys[f"{side}.pos_embeds.weight"] = (n, tf)
        for i in range(cfg.num_layers):
            b = f"{side}.vit.{i}."
            keys[b + "ln_1.weight"] = (tf,)
            keys[b + "attn.c_attn.weight"] = (3 * tf, tf)
            keys[b + "attn.c_proj.weight"] = (tf, tf)
            keys[b + "ln_2.weight"] = (tf,)
            keys[b + "mlp.c_fc.weight"] = (4 * tf, tf)
            keys[b + "mlp.c_proj.weight"] = (tf, 4 * tf)
        keys[f"{side}.output_ln.weight"] = (tf,)
        keys[f"{side}.output_ln.bias"] = (tf,)
        keys[f"{side}.output_proj.weight"] = (d_out, tf)
        keys[f"{side}.output_proj.bias"] = (d_out,)
    return keys


def expected_taming_keys(cfg: TamingTokenizerConfig) -> dict:
    keys = {}

    def conv(name, cout, cin, ks):
        keys[name + ".weight"] = (cout, cin, ks, ks)
        keys[name + ".bias"] = (cout,)

    def norm(name, c):
        keys[name + ".weight"] = (c,)
        keys[name + ".bias"] = (c,)

    def resnet(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cout, cin, 3)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(name + ".nin_shortcut", cout, cin, 1)

    def attn(name, c):
        norm(name + ".norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name, c):
        resnet(name + ".block_1", c, c)
        attn(name + ".attn_1", c)
        resnet(name + ".block_2", c, c)

    lv = len(cfg.ch_mult)
    c_l = [cfg.ch * m for m in cfg.ch_mult]
    in_ch_mult = (1,) + tuple(cfg.ch_mult)
    r_l = [cfg.resolution // 2**lvl for lvl in range(lv)]
    nrb, z, top = cfg.num_res_blocks, cfg.z_channels, c_l[-1]

    conv("encoder.conv_in", cfg.ch, cfg.in_channels, 3)
    for lvl in range(lv):
        for j in range(nrb):
            resnet(f"encoder.down.{lvl}.block.{j}", cfg.ch * in_ch_mult[lvl] if j == 0 else c_l[lvl], c_l[lvl])
            if r_l[lvl] in cfg.attn_resolutions:
                attn(f"encoder.down.{lvl}.attn.{j}", c_l[lvl])
        if lvl < lv - 1:
            conv(f"encoder.down.{lvl}.downsample.conv", c_l[lvl], c_l[lvl], 3)
    mid("encoder.mid", top)
    norm("encoder.norm_out", top)
    conv("encoder.conv_out", z, top, 3)

    conv("decoder.conv_in", top, z, 3)
    mid("decoder.mid", top)
    for lvl in range(lv):
        first_in = c_l[lvl + 1] if lvl < lv - 1 else top
        for j in range(nrb + 1):
            resnet(f"decoder.up.{lvl}.block.{j}", first_in if j == 0 else c_l[lvl], c_l[lvl])
            if r_l[lvl] in cfg.attn_resolutions:
                attn(f"decoder.up.{lvl}.attn.{j}", c_l[lvl])
        if lvl >= 1:
            conv(f"decoder.up.{lvl}.upsample.conv", c_l[lvl], c_l[lvl], 3)
    norm("decoder.norm_out", c_l[0])
    conv("decoder.conv_out", cfg.out_ch, c_l[0], 3)

    conv("quant_conv", cfg.embed_dim, z, 1)
    conv("post_quant_conv", z, cfg.embed_dim, 1)
    keys["quantize.embedding.weight"] = (cfg.n_embed, cfg.embed_dim)
    return {"vq_model." + k: v for k, v in keys.items()}


@pytest.mark.parametrize("cfg", [preset("tiny").tokenizer, VIT_PADDED], ids=["tiny", "padded"])
def test_vit_state_dict_layout(cfg):
    assert shapes(ViTVQGAN(cfg)) == expected_vit_keys(cfg)


@pytest.mark.parametrize("cfg", [preset("tiny-taming").tokenizer, TAMING_3LVL], ids=["tiny", "3lvl"])
def test_taming_state_dict_layout(cfg):
    got = shapes(TamingVQGAN(cfg))
    assert got == expected_taming_keys(cfg)
    # The config really exercises the optional keys.
    assert any("nin_shortcut" in k for k in got) and any(".attn." in k for k in got)


def test_taming_3lvl_attention_only_at_resolution_8():
    keys = TamingVQGAN(TAMING_3LVL).state_dict()
    assert {k.split(".attn.")[0] for k in keys if ".attn." in k} == {
        "vq_model.encoder.down.1", "vq_model.decoder.up.1"}
    assert "vq_model.decoder.up.0.upsample.conv.weight" not in keys
    assert "vq_model.encoder.down.2.downsample.conv.weight" not in keys


def test_official_style_state_dict_loads_with_ignored_extras():
    """An official-style dict (with attn_mask buffers) loads once those are dropped."""
    model = ViTVQGAN(VIT_PADDED)
    sd = {k: torch.randn(v) for k, v in expected_vit_keys(VIT_PADDED).items()}
    sd.update({f"encoder.vit.{i}.attn.attn_mask": torch.ones(1, 1, 24, 24, dtype=torch.bool) for i in range(2)})
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == [] and all(k.endswith("attn_mask") for k in result.unexpected_keys)
    assert torch.equal(model.vq_vae._embedding.weight, sd["vq_vae._embedding.weight"])


# -- patches ---------------------------------------------------------------------------


def test_patchify_order_and_inverse():
    p, rows, cols = 3, 2, 4
    x = torch.randn(2, 3, rows * p, cols * p, dtype=torch.float64)
    patches = patchify(x, p)
    assert patches.shape == (2, rows * cols, 3 * p * p)
    for row, col, c, py, px in [(0, 0, 0, 0, 0), (1, 2, 2, 1, 0), (0, 3, 1, 2, 2), (1, 3, 2, 2, 2)]:
        assert patches[1, row * cols + col, c * p * p + py * p + px] == x[1, c, row * p + py, col * p + px]
    # Same layout as unfold/fold (WHAM decodes with nn.Fold).
    assert torch.equal(patches, F.unfold(x, p, stride=p).transpose(1, 2))
    assert torch.equal(unpatchify(patches, p, rows, cols), x)
    assert torch.equal(unpatchify(patches, p, rows, cols),
                       F.fold(patches.transpose(1, 2), (rows * p, cols * p), p, stride=p))
    y = torch.randn(2, rows * cols, 3 * p * p)
    assert torch.equal(patchify(unpatchify(y, p, rows, cols), p), y)


def test_module_patchify_uses_padded_grid():
    m = ViTVQGAN(VIT_PADDED)
    x = torch.randn(1, 3, 40, 60)
    assert m.patchify(x).shape == (1, 24, 300)
    assert torch.equal(m.unpatchify(m.patchify(x)), x)


# -- pre/post-processing -----------------------------------------------------------------


def test_vit_preprocess_constants():
    m = ViTVQGAN(VIT_PADDED)
    img = random_images(2, 3, 35, 55, seed=1)
    img[0, :, 0, 0] = 0
    img[0, :, 0, 1] = 255
    x = m.preprocess(img)
    assert x.dtype == torch.float32 and x.shape == img.shape
    for c in range(3):
        assert x[0, c, 0, 0].item() == pytest.approx(-MEAN[c] / STD[c], abs=1e-6)
        assert x[0, c, 0, 1].item() == pytest.approx((1 - MEAN[c]) / STD[c], abs=1e-6)
        ref = (img[:, c].double() / 255 - MEAN[c]) / STD[c]
        torch.testing.assert_close(x[:, c].double(), ref, atol=1e-6, rtol=0)


def test_vit_postprocess_truncates_and_clips():
    m = ViTVQGAN(VIT_PADDED)
    targets = [100.7, 100.2, 254.99, 0.6, -30.0, 400.0]  # in 0..255 units, before truncation
    expected = [100, 100, 254, 0, 0, 255]
    x = torch.zeros(1, 3, 35, 55)
    for c in range(3):
        for i, t in enumerate(targets):
            x[0, c, 0, i] = (t / 255 - MEAN[c]) / STD[c]
    out = m.postprocess(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 35, 55)
    for c in range(3):
        assert out[0, c, 0, : len(targets)].tolist() == expected


def test_taming_pre_and_postprocess():
    m = TamingVQGAN(preset("tiny-taming").tokenizer)
    img = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8).view(1, 1, 1, 5).expand(1, 3, 16, 5)
    x = m.preprocess(img)
    assert x.dtype == torch.float32
    expected = torch.tensor([0, 1, 127, 128, 255], dtype=torch.float64) / 127.5 - 1
    torch.testing.assert_close(x[0, 0, 0].double(), expected, atol=1e-7, rtol=0)
    y = torch.tensor([100.9 / 127.5 - 1, 100.1 / 127.5 - 1, -1.5, 1.5, 0.0]).view(1, 1, 1, 5)
    assert m.postprocess(y).flatten().tolist() == [100, 100, 0, 255, 127]  # 127.5 -> 127


# -- quantizers ----------------------------------------------------------------------------


def _toy_codebook():
    # Integer entries: every distance below is exact in fp32, so ties are real ties.
    book = torch.zeros(6, 4)
    book[0, 1] = 3          # other direction
    book[1, 0] = 2          # direction e0, small norm  -> first cosine tie
    book[2, :2] = torch.tensor([4, 1])  # raw-nearest to (5, 1) ...
    book[3, 0] = 7          # direction e0, large norm  -> second cosine tie
    book[4, :2] = torch.tensor([4, 1])  # ... tied with row 2 in raw distance
    book[5, :2] = torch.tensor([-5, -1])
    return book


def test_vit_quantizer_uses_normalised_codebook_and_first_tie():
    m = ViTVQGAN(ViTTokenizerConfig(width=4, height=2, patch_size=2, transf_dim=16, embedding_dim=4,
                                    num_layers=1, head_size=8, vocab_size=6))
    with torch.no_grad():
        m.vq_vae._embedding.weight.copy_(_toy_codebook())
    latents = torch.tensor([[[5.0, 0, 0, 0], [5.0, 0.1, 0, 0]]])
    codes, tokens = m.quantize(latents)
    # Cosine: rows 1 and 3 are both e0 after normalisation, an exact tie; the first one wins.
    # (Raw Euclidean distance would pick row 3 for (5, 0) and row 2 for (5, 0.1).)
    assert tokens.tolist() == [[1, 1]] and tokens.dtype == torch.long
    torch.testing.assert_close(codes, torch.tensor([[[1.0, 0, 0, 0], [1.0, 0, 0, 0]]]))


def test_taming_quantizer_uses_raw_codebook_and_first_tie():
    cfg = TamingTokenizerConfig(n_embed=6, embed_dim=4, num_indices_per_axis=4, z_channels=4, resolution=8,
                                ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    m = TamingVQGAN(cfg)
    with torch.no_grad():
        m.vq_model.quantize.embedding.weight.copy_(_toy_codebook())
    latents = torch.tensor([[[5.0, 1.0, 0, 0], [7.0, 0.0, 0, 0], [6.0, 0, 0, 0]]])
    codes, tokens = m.quantize(latents)
    # (5,1): rows 2 and 4 both at squared distance 1 -> 2.  (7,0) -> 3.  (6,0): rows 3 at 1, 2/4 at 5 -> 3.
    assert tokens.tolist() == [[2, 3, 3]]
    assert torch.equal(codes, _toy_codebook()[tokens])


# -- float64 reference: ViT ------------------------------------------------------------------


def ref_layer_norm(x, w, b=None, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps) * w
    return y if b is None else y + b


def ref_vit_coder(x, sd, side, cfg):
    w = lambda name: sd[f"{side}.{name}"]  # noqa: E731
    h = x @ w("proj1.weight").T + w("proj1.bias") + w("pos_embeds.weight")
    n_head, hd = cfg.transf_dim // cfg.head_size, cfg.head_size
    for i in range(cfg.num_layers):
        blk = lambda name: w(f"vit.{i}.{name}")  # noqa: E731
        a = ref_layer_norm(h, blk("ln_1.weight"))
        qkv = a @ blk("attn.c_attn.weight").T
        heads = []
        for head in range(n_head):
            q, k, v = (qkv[..., part * cfg.transf_dim + head * hd: part * cfg.transf_dim + (head + 1) * hd]
                       for part in range(3))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
            heads.append(att @ v)
        h = h + torch.cat(heads, dim=-1) @ blk("attn.c_proj.weight").T
        a = ref_layer_norm(h, blk("ln_2.weight")) @ blk("mlp.c_fc.weight").T
        a = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
        h = h + a @ blk("mlp.c_proj.weight").T
    h = ref_layer_norm(h, w("output_ln.weight"), w("output_ln.bias"))
    return h @ w("output_proj.weight").T + w("output_proj.bias")


def ref_vit_encode(images, sd, cfg):
    p = cfg.patch_size
    rows, cols = math.ceil(cfg.height / p), math.ceil(cfg.width / p)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    x = (images.double() / 255 - mean) / std
    padded = torch.zeros(x.shape[0], 3, rows * p, cols * p, dtype=torch.float64)
    padded[:, :, : cfg.height, : cfg.width] = x
    patches = torch.stack([padded[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(x.shape[0], -1)
                           for r in range(rows) for c in range(cols)], dim=1)
    z = ref_vit_coder(patches, sd, "encoder", cfg)
    z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    book = sd["vq_vae._embedding.weight"]
    book = book / book.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dist = (z**2).sum(-1, keepdim=True) + (book**2).sum(-1) - 2 * z @ book.T
    return z, dist.argmin(-1), dist


def ref_vit_decode(tokens, sd, cfg):
    p = cfg.patch_size
    rows, cols = math.ceil(cfg.height / p), math.ceil(cfg.width / p)
    book = sd["vq_vae._embedding.weight"]
    book = book / book.norm(dim=1, keepdim=True).clamp_min(1e-12)
    codes = F.one_hot(tokens, cfg.vocab_size).double() @ book
    patches = ref_vit_coder(codes, sd, "decoder", cfg)
    img = torch.zeros(tokens.shape[0], 3, rows * p, cols * p, dtype=torch.float64)
    for t in range(rows * cols):
        r, c = divmod(t, cols)
        img[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = patches[:, t].reshape(-1, 3, p, p)
    return img[:, :, : cfg.height, : cfg.width]


@pytest.mark.parametrize("cfg", [VIT_PADDED, preset("tiny").tokenizer], ids=["padded", "tiny"])
def test_vit_matches_float64_reference(cfg):
    m = randomize(ViTVQGAN(cfg), seed=3)
    sd = {k: v.double() for k, v in m.state_dict().items()}
    images = random_images(3, 3, cfg.height, cfg.width, seed=4)
    z_ref, tok_ref, dist = ref_vit_encode(images, sd, cfg)
    # Guard against a flaky comparison: the winning margin must dwarf fp32 error.
    top2 = dist.topk(2, dim=-1, largest=False).values
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-5

    latents = m.encode_latents(m.preprocess(images))
    torch.testing.assert_close(latents.double(), z_ref, atol=2e-5, rtol=0)
    tokens = m.encode(images)
    assert tokens.dtype == torch.long and tokens.shape == (3, cfg.tokens_per_image)
    assert torch.equal(tokens, tok_ref)

    img_ref = ref_vit_decode(tokens, sd, cfg)
    codes, _ = m.quantize(latents)
    torch.testing.assert_close(m.decode_codes(codes).double(), img_ref, atol=1e-4, rtol=0)
    out = m.decode(tokens)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    out_ref = ((img_ref * std + mean).clamp(0, 1) * 255).floor()
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (out.double() - out_ref).abs().max() <= 1  # truncation boundary may flip by one


# -- float64 reference: Taming -----------------------------------------------------------------


def ref_group_norm(x, w, b, groups=32, eps=1e-6):
    n, c, h, wd = x.shape
    g = x.reshape(n, groups, -1)
    mu = g.mean(-1, keepdim=True)
    var = ((g - mu) ** 2).mean(-1, keepdim=True)
    y = ((g - mu) / torch.sqrt(var + eps)).reshape(n, c, h, wd)
    return y * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def ref_taming_net(sd, prefix):
    """Closures over the float64 state_dict for one of encoder/decoder."""
    w = lambda name: sd[f"{prefix}.{name}"]  # noqa: E731
    silu = lambda x: x / (1 + torch.exp(-x))  # noqa: E731

    def conv(x, name, pad=1, stride=1):
        return F.conv2d(x, w(name + ".weight"), w(name + ".bias"), stride=stride, padding=pad)

    def resnet(x, name):
        h = conv(silu(ref_group_norm(x, w(name + ".norm1.weight"), w(name + ".norm1.bias"))), name + ".conv1")
        h = conv(silu(ref_group_norm(h, w(name + ".norm2.weight"), w(name + ".norm2.bias"))), name + ".conv2")
        if f"{prefix}.{name}.nin_shortcut.weight" in sd:
            x = conv(x, name + ".nin_shortcut", pad=0)
        return x + h

    def attn(x, name):
        n, c, hh, ww = x.shape
        a = ref_group_norm(x, w(name + ".norm.weight"), w(name + ".norm.bias"))
        q, k, v = (conv(a, f"{name}.{part}", pad=0).reshape(n, c, hh * ww) for part in "qkv")
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (n, query, key)
        out = (v @ weights.transpose(1, 2)).reshape(n, c, hh, ww)
        return x + conv(out, name + ".proj_out", pad=0)

    def downsample(x, name):
        n, c, hh, ww = x.shape
        x = torch.cat([x, torch.zeros(n, c, hh, 1, dtype=x.dtype)], dim=3)
        x = torch.cat([x, torch.zeros(n, c, 1, ww + 1, dtype=x.dtype)], dim=2)
        return conv(x, name + ".conv", pad=0, stride=2)

    def upsample(x, name):
        return conv(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), name + ".conv")

    def has(name):
        return any(k.startswith(f"{prefix}.{name}") for k in sd)

    return w, silu, conv, resnet, attn, downsample, upsample, has


def ref_taming_encoder(x, sd, cfg):
    w, silu, conv, resnet, attn, downsample, _, has = ref_taming_net(sd, "vq_model.encoder")
    h = conv(x, "conv_in")
    for lvl in range(len(cfg.ch_mult)):
        for j in range(cfg.num_res_blocks):
            h = resnet(h, f"down.{lvl}.block.{j}")
            if has(f"down.{lvl}.attn.{j}."):
                h = attn(h, f"down.{lvl}.attn.{j}")
        if has(f"down.{lvl}.downsample."):
            h = downsample(h, f"down.{lvl}.downsample")
    h = resnet(attn(resnet(h, "mid.block_1"), "mid.attn_1"), "mid.block_2")
    return conv(silu(ref_group_norm(h, w("norm_out.weight"), w("norm_out.bias"))), "conv_out")


def ref_taming_decoder(z, sd, cfg):
    w, silu, conv, resnet, attn, _, upsample, has = ref_taming_net(sd, "vq_model.decoder")
    h = conv(z, "conv_in")
    h = resnet(attn(resnet(h, "mid.block_1"), "mid.attn_1"), "mid.block_2")
    for lvl in reversed(range(len(cfg.ch_mult))):
        for j in range(cfg.num_res_blocks + 1):
            h = resnet(h, f"up.{lvl}.block.{j}")
            if has(f"up.{lvl}.attn.{j}."):
                h = attn(h, f"up.{lvl}.attn.{j}")
        if has(f"up.{lvl}.upsample."):
            h = upsample(h, f"up.{lvl}.upsample")
    return conv(silu(ref_group_norm(h, w("norm_out.weight"), w("norm_out.bias"))), "conv_out")


@pytest.mark.parametrize("cfg", [preset("tiny-taming").tokenizer, TAMING_3LVL], ids=["tiny", "3lvl"])
def test_taming_matches_float64_reference(cfg):
    m = randomize(TamingVQGAN(cfg), seed=5)
    sd = {k: v.double() for k, v in m.state_dict().items()}
    images = random_images(2, 3, cfg.resolution, cfg.resolution, seed=6)
    x = images.double() / 127.5 - 1

    qc = lambda t: F.conv2d(t, sd["vq_model.quant_conv.weight"], sd["vq_model.quant_conv.bias"])  # noqa: E731
    z = qc(ref_taming_encoder(x, sd, cfg))  # (B, e, n, n)
    n = cfg.num_indices_per_axis
    assert z.shape == (2, cfg.embed_dim, n, n)
    flat = torch.stack([z[:, :, r, c] for r in range(n) for c in range(n)], dim=1)  # row-major tokens
    book = sd["vq_model.quantize.embedding.weight"]
    dist = ((flat[:, :, None, :] - book[None, None]) ** 2).sum(-1)
    top2 = dist.topk(2, dim=-1, largest=False).values
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-5

    latents = m.encode_latents(m.preprocess(images))
    torch.testing.assert_close(latents.double(), flat, atol=1e-4, rtol=1e-4)
    tokens = m.encode(images)
    assert tokens.dtype == torch.long and tokens.shape == (2, n * n)
    assert torch.equal(tokens, dist.argmin(-1))

    codes = book[tokens]  # (B, N, e) -> (B, e, n, n), row-major
    zq = codes.transpose(1, 2).reshape(2, cfg.embed_dim, n, n)
    zq = F.conv2d(zq, sd["vq_model.post_quant_conv.weight"], sd["vq_model.post_quant_conv.bias"])
    img_ref = ref_taming_decoder(zq, sd, cfg)
    torch.testing.assert_close(m.decode_codes(m.quantize(latents)[0]).double(), img_ref, atol=1e-4, rtol=1e-4)
    out = m.decode(tokens)
    out_ref = ((img_ref.clamp(-1, 1) + 1) * 127.5).floor()
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (out.double() - out_ref).abs().max() <= 1


def test_taming_encode_tokens_are_argmin_of_quant_conv_encoder():
    """Token order check with the module's own encoder: row-major over the latent grid."""
    cfg = preset("tiny-taming").tokenizer
    m = randomize(TamingVQGAN(cfg), seed=7)
    images = random_images(2, 3, 16, 16, seed=8)
    with torch.no_grad():
        z = m.vq_model.quant_conv(m.vq_model.encoder(images.float() / 127.5 - 1))
    flat = z.permute(0, 2, 3, 1).reshape(2, -1, cfg.embed_dim)
    dist = torch.cdist(flat.double(), m.vq_model.quantize.embedding.weight.double()[None])
    assert torch.equal(m.encode(images), dist.argmin(-1))


# -- interface: shapes, dtypes, gradients, batching --------------------------------------------


@pytest.fixture(params=["vit", "taming"])
def tokenizer(request):
    if request.param == "vit":
        return randomize(ViTVQGAN(VIT_PADDED), seed=9)
    return randomize(TamingVQGAN(preset("tiny-taming").tokenizer), seed=9)


def test_interface_shapes_and_batching(tokenizer):
    t = tokenizer
    images = random_images(3, 3, t.height, t.width, seed=10)
    tokens = t.encode(images)
    assert tokens.shape == (3, t.tokens_per_image) and tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < t.vocab_size
    # Batched == one at a time.
    assert torch.equal(torch.cat([t.encode(images[i:i + 1]) for i in range(3)]), tokens)
    out = t.decode(tokens)
    assert out.shape == images.shape and out.dtype == torch.uint8
    # Batched convs may sum in another order, so a truncation can flip by one.
    single = torch.cat([t.decode(tokens[i:i + 1]) for i in range(3)])
    assert (single.int() - out.int()).abs().max() <= 1
    # Empty batch.
    assert t.encode(images[:0]).shape == (0, t.tokens_per_image)


def test_straight_through_gradient_reaches_encoder(tokenizer):
    t = tokenizer.train()
    x = t.preprocess(random_images(2, 3, t.height, t.width, seed=11))
    latents = t.encode_latents(x)
    codes, tokens = t.quantize(latents)
    assert codes.shape == latents.shape and tokens.shape == latents.shape[:2]
    recon = t.decode_codes(latents + (codes - latents).detach())
    assert recon.shape == x.shape and recon.dtype == torch.float32
    recon.square().mean().backward()
    grads = [p.grad for n, p in t.named_parameters() if n.startswith(("encoder.", "vq_model.encoder."))]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_float64_and_bfloat16_modules(tokenizer):
    images = random_images(2, 3, tokenizer.height, tokenizer.width, seed=12)
    tokens = tokenizer.encode(images)
    assert torch.equal(tokenizer.to(torch.float64).encode(images), tokens)
    bf = tokenizer.to(torch.bfloat16)
    assert bf.encode(images).shape == tokens.shape
    out = bf.decode(tokens)
    assert out.dtype == torch.uint8 and out.shape == images.shape


# -- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make_images, fragment", [
    (lambda t: torch.zeros(2, 3, t.height, t.width), "float32"),
    (lambda t: torch.zeros(2, 4, t.height, t.width, dtype=torch.uint8), "shape (2, 4"),
    (lambda t: torch.zeros(2, 3, t.height + 1, t.width, dtype=torch.uint8), "shape"),
    (lambda t: torch.zeros(3, t.height, t.width, dtype=torch.uint8), "shape"),
    (lambda t: torch.zeros(2, t.height, t.width, 3, dtype=torch.uint8).numpy(), "ndarray"),
])
def test_bad_images(tokenizer, make_images, fragment):
    with pytest.raises(ValueError, match="images: expected") as exc:
        tokenizer.encode(make_images(tokenizer))
    assert fragment in str(exc.value)
    assert f"(B, 3, {tokenizer.height}, {tokenizer.width})" in str(exc.value)


@pytest.mark.parametrize("make_tokens, fragment", [
    (lambda t: torch.full((1, t.tokens_per_image), t.vocab_size), "got ids in"),
    (lambda t: torch.full((1, t.tokens_per_image), -1), "got ids in [-1"),
    (lambda t: torch.zeros(1, t.tokens_per_image + 1, dtype=torch.long), "shape"),
    (lambda t: torch.zeros(t.tokens_per_image, dtype=torch.long), "shape"),
    (lambda t: torch.zeros(1, t.tokens_per_image), "float32"),
])
def test_bad_tokens(tokenizer, make_tokens, fragment):
    with pytest.raises(ValueError, match="tokens: expected") as exc:
        tokenizer.decode(make_tokens(tokenizer))
    assert fragment in str(exc.value)
    assert f"[0, {tokenizer.vocab_size - 1}]" in str(exc.value)
