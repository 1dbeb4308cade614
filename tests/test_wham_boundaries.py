"""Exact agreement with WHAM's released code where its rules are easy to get subtly wrong.

Each test states the reference rule independently (WHAM_FORMAT.md §5.2, §6, §8.3,
and the addendum's cross-check) and compares: argmax sampling whatever
``min_tokens_to_keep``, the Taming attention's rounding order, OpenCV's bilinear
prompt resize, and WHAM-format action files.
"""

import json

import cv2
import numpy as np
import pytest
import torch

from wham_gym import controller, load_model
from wham_gym.dream.actions import read_actions_json
from wham_gym.data.reader import read_demonstrator_folder
from wham_gym.model.taming_vqgan import AttnBlock
from wham_gym.prompts import resize_linear
from wham_gym.sampling import filter_logits


# ------------------------------------------------------------------ sampling
def test_deterministic_takes_the_argmax_whatever_min_tokens_to_keep():
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0, 2.5], [1.0, 1.0, 0.0, 0.5, -2.0]])
    for m in (1, 3, 5):
        kept = torch.isfinite(filter_logits(logits, 0, 4, 0.9, min_tokens_to_keep=m, deterministic=True))
        assert kept.tolist() == [[False, True, False, False, False], [True, True, False, False, False]]  # ties stay
    # min_tokens_to_keep still widens top-k when not deterministic (WHAM's rule).
    kept = torch.isfinite(filter_logits(logits, 0, 4, 0.9, top_k=1, min_tokens_to_keep=3))
    assert kept.sum(1).tolist() == [3, 3]
    # (The engine against the plain reference procedure with these settings: test_engine.py.)


# ------------------------------------------------------------------ Taming decode
def test_taming_attention_rounds_like_the_reference_product():
    """taming's AttnBlock: w = softmax((q^T k) * C^-0.5) over keys, out = v @ w^T, in float32.

    A fused attention kernel computes the same math in another order and flips about
    0.015 % of decoded uint8 values by one; this order gives WHAM's bits.
    """
    torch.manual_seed(0)
    for c, side in [(32, 8), (64, 16)]:
        block = AttnBlock(c).eval()
        x = torch.randn(2, c, side, side)
        with torch.no_grad():
            h = block.norm(x)
            q, k, v = (conv(h).reshape(2, c, side * side) for conv in (block.q, block.k, block.v))
            w = torch.bmm(q.permute(0, 2, 1), k)
            w = torch.nn.functional.softmax(w * (int(c) ** (-0.5)), dim=2)
            ref = x + block.proj_out(torch.bmm(v, w.permute(0, 2, 1)).reshape(2, c, side, side))
            assert torch.equal(block(x), ref)


# ------------------------------------------------------------------ prompt resize
SIZES = [((180, 300), (128, 128)), ((180, 300), (64, 64)), ((360, 600), (180, 300)), ((100, 77), (180, 300)),
         ((181, 301), (180, 300)), ((240, 320), (180, 300)), ((180, 300), (256, 256)), ((720, 1280), (180, 300)),
         ((1, 5), (4, 4)), ((7, 9), (20, 3))]


@pytest.mark.parametrize("src, dst", SIZES)
def test_prompt_resize_equals_opencv_inter_linear(src, dst):
    # run_server.py resizes prompt images with cv2.resize's default INTER_LINEAR.
    rng = np.random.default_rng(sum(src) + sum(dst))
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    expected = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_linear(img, dst), expected)
    batch = np.stack([img, img[::-1]])
    assert np.array_equal(resize_linear(batch, dst)[1], cv2.resize(img[::-1].copy(), (dst[1], dst[0])))


def test_prompt_resize_on_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(25):
        src = tuple(int(v) for v in rng.integers(1, 260, 2))
        dst = tuple(int(v) for v in rng.integers(1, 260, 2))
        img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
        assert np.array_equal(resize_linear(img, dst), cv2.resize(img, (dst[1], dst[0]))), (src, dst)


# ------------------------------------------------------------------ WHAM-format actions
def _demonstrator(folder, actions):
    from PIL import Image

    folder.mkdir()
    table = {}
    for k, a in enumerate(actions):
        Image.fromarray(np.full((180, 300, 3), 10 * k, np.uint8)).save(folder / f"image{k}.png")
        table[f"image{k}.png"] = list(a)
    (folder / "actions.json").write_text(json.dumps(table))
    return folder / "actions.json"


def _wham_ids(action):
    """run_server.py: sticks digitized on the JSON doubles, then a float32 tensor, then (value + offset).long()."""
    a = list(action)
    a[-4:] = list(np.digitize(a[-4:], controller.STICK_BIN_BOUNDARIES) - 1)
    values = torch.tensor(np.array(a, np.float64), dtype=torch.float32)
    offsets = torch.tensor([2 * i for i in range(12)] + [24 + 11 * j for j in range(4)], dtype=torch.float32)
    return (values + offsets).long()


def test_demonstrator_actions_give_wham_token_ids(tmp_path):
    rows = [[0.5, 0.7, 0.999, 1.0, 0, 1, 0, 0, 0, 0, 0, 0, -0.05000000074505806, 0.949999988079071, -0.05, 0.95],
            [1, 1, 0.25, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0.15000000596046448, 0.625, 0.8500000238418579, -1.0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.05, 0.25000000000000006, 0.7499999999999999, -0.25]]
    path = _demonstrator(tmp_path / "ex", rows)
    model = load_model("tiny")
    ep = read_demonstrator_folder(str(tmp_path / "ex"))
    from wham_gym.model.vocab import action_tokens

    got = action_tokens(torch.from_numpy(ep.wham_actions))
    expected = torch.stack([_wham_ids(r) for r in rows])
    assert torch.equal(got, expected)
    # The same table used as an action source: the env's own rule then sees the snapped values.
    table = read_actions_json(str(path))
    assert torch.equal(model.action_ids(torch.from_numpy(table)), expected)
