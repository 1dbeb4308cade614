"""The controller and WHAM's action vocabulary (WHAM_FORMAT.md §6-§7)."""

import numpy as np
import pytest
import torch

from wham_gym import controller as C
from wham_gym.model import load_model
from wham_gym.model.vocab import ACTION_VOCAB_SIZE, Vocab, action_tokens, action_values


@pytest.mark.parametrize("x, b", [(0.0, 5), (0.15, 6), (1.0, 10), (-1.0, 0), (0.05, 6), (-0.05, 5),
                                  (0.999, 10), (-0.95, 1), (0.94, 9), (-0.2, 4)])
def test_bins_follow_np_digitize_rule(x, b):
    assert C.sticks_to_bins(np.array([x]))[0] == b
    assert C.sticks_to_bins(torch.tensor([x], dtype=torch.float64))[0] == b
    assert np.digitize(x, C.STICK_BIN_BOUNDARIES) - 1 == b  # the reference rule itself
    # A float32 value is binned as the float64 number it is, as WHAM would bin it.
    b32 = np.digitize(np.float64(np.float32(x)), C.STICK_BIN_BOUNDARIES) - 1
    assert C.sticks_to_bins(torch.tensor([x], dtype=torch.float32))[0] == b32
    assert C.sticks_to_bins(np.array([x], np.float32))[0] == b32


def _near_boundaries():
    """Every boundary, its float32 rounding and the neighbouring doubles and floats."""
    values = []
    for edge in C.STICK_BIN_BOUNDARIES[1:-1]:
        f = np.float32(edge)
        values += [edge, np.nextafter(edge, -2), np.nextafter(edge, 2), float(f),
                   float(np.nextafter(f, np.float32(-2))), float(np.nextafter(f, np.float32(2)))]
    return np.array(values, np.float64)


def test_boundary_values_bin_like_wham_float64_digitize():
    x = _near_boundaries()
    ref = np.digitize(x, C.STICK_BIN_BOUNDARIES) - 1  # run_server: np.digitize on the JSON doubles
    assert np.array_equal(C.sticks_to_bins(x), ref)
    assert np.array_equal(C.sticks_to_bins(torch.from_numpy(x)).numpy(), ref)
    # The two values the cross-check with WHAM's code found binned differently:
    assert C.sticks_to_bins(np.array([-0.05000000074505806, 0.949999988079071])).tolist() == [4, 9]
    # A whole action, sticks given as JSON doubles, converts to WHAM's ids.
    actions = np.zeros((len(x), 16))
    actions[:, 12:] = x[:, None]
    wham = C.to_wham(actions, buttons="wham")
    assert np.array_equal(wham[:, 12:], np.repeat(ref[:, None], 4, 1))


@pytest.mark.parametrize("value, pressed", [(0.0, 0), (0.3, 0), (0.5, 0), (0.7, 0), (0.999, 0), (1.0, 1)])
def test_wham_button_rule_truncates_like_wham(value, pressed):
    a = np.zeros((1, 16))
    a[0, :12] = value
    # WHAM: (value + 2i) in float32, then .long(); the button is pressed iff that lands on 2i + 1.
    wham_ids = (np.float32(value) + 2 * np.arange(12, dtype=np.float32)).astype(np.int64) - 2 * np.arange(12)
    assert set(wham_ids.tolist()) == {pressed}
    assert C.to_wham(a, buttons="wham")[0, :12].tolist() == wham_ids.tolist()
    assert C.to_wham(torch.from_numpy(a), buttons="wham")[0, :12].tolist() == wham_ids.tolist()
    # The env's documented rule for agents stays: pressed at >= 0.5.
    assert C.to_wham(a)[0, 0] == float(value >= 0.5)
    with pytest.raises(ValueError, match="buttons"):
        C.to_wham(a, buttons="round")


def test_wham_button_rule_matches_float32_offset_rounding():
    # 0.99999997 rounds up to the next integer once a large offset is added in float32.
    a = np.zeros((1, 16))
    a[0, :12] = 0.99999997
    expected = (np.float32(0.99999997) + 2 * np.arange(12, dtype=np.float32)).astype(np.int64) - 2 * np.arange(12)
    assert 0 in expected and 1 in expected  # both outcomes occur across the 12 offsets
    assert C.to_wham(a, buttons="wham")[0, :12].tolist() == expected.tolist()


def test_bins_agree_with_digitize_everywhere():
    x = np.linspace(-1.0, 1.0, 40001)
    ref = np.digitize(x, C.STICK_BIN_BOUNDARIES) - 1
    assert np.array_equal(C.sticks_to_bins(x), ref)
    assert np.array_equal(C.sticks_to_bins(torch.from_numpy(x)).numpy(), ref)


def test_bin_middles_round_trip():
    middles = C.bins_to_sticks(np.arange(11))
    assert np.allclose(middles, [-1, -0.85, -0.625, -0.375, -0.15, 0, 0.15, 0.375, 0.625, 0.85, 1])
    assert np.array_equal(C.sticks_to_bins(middles), np.arange(11))
    assert torch.equal(C.bins_to_sticks(torch.arange(11)), torch.from_numpy(middles))


def test_out_of_range_sticks_and_bins_raise():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        C.sticks_to_bins(np.array([1.05]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        C.sticks_to_bins(torch.tensor([-1.2]))
    with pytest.raises(ValueError, match="0..10"):
        C.bins_to_sticks(np.array([11]))


def test_to_and_from_wham_batched():
    a = np.zeros((2, 3, 16), np.float32)
    a[..., 0] = 0.5  # pressed at exactly the threshold
    a[..., 1] = 0.49
    a[..., 12] = 0.3
    a[..., 15] = -1.0
    w = C.to_wham(a)
    assert w.shape == (2, 3, 16) and w.dtype == np.float32
    assert (w[..., 0] == 1).all() and (w[..., 1] == 0).all()
    assert (w[..., 12] == 7).all() and (w[..., 13] == 5).all() and (w[..., 15] == 0).all()
    back = C.from_wham(w)
    assert np.allclose(back[..., 12], 0.375) and np.allclose(back[..., 15], -1.0)
    assert torch.equal(C.to_wham(torch.from_numpy(a)), torch.from_numpy(w))
    assert np.array_equal(C.quantize(a), back)


def test_action_space_and_names():
    space = C.action_space(seed=0)
    assert space.shape == (16,) and space.dtype == np.float32
    assert (space.low[:12] == 0).all() and (space.low[12:] == -1).all() and (space.high == 1).all()
    assert C.ACTION_NAMES[12:] == ("left_stick_x", "left_stick_y", "right_stick_x", "right_stick_y")
    assert C.index_of("right_stick_x") == 14
    with pytest.raises(ValueError, match="unknown controller dimension"):
        C.index_of("trigger")


def test_validate_actions_names_index_and_dimension():
    a = np.zeros((4, 16), np.float32)
    a[2, 13] = np.inf
    with pytest.raises(ValueError, match=r"index \(2,\) dimension 13 \(left_stick_y\)"):
        C.validate_actions(a)
    with pytest.raises(ValueError, match=r"\(\.\.\., 16\)"):
        C.validate_actions(np.zeros((4, 15)))
    with pytest.raises(ValueError, match="got shape None"):
        C.validate_actions([0.0] * 16)


def test_action_token_ids_and_ranges():
    w = torch.zeros(16)
    w[:12] = torch.tensor([1, 0] * 6, dtype=torch.float32)
    w[12:] = torch.tensor([0, 10, 5, 3], dtype=torch.float32)
    ids = action_tokens(w)
    expected = [2 * i + (1 if i % 2 == 0 else 0) for i in range(12)] + [24 + 0, 35 + 10, 46 + 5, 57 + 3]
    assert ids.tolist() == expected
    assert torch.equal(action_values(ids), w)
    assert ACTION_VOCAB_SIZE == 68
    assert action_tokens(torch.tensor([0.0] * 12 + [5.7, 5.0, 5.0, 5.0]))[12] == 24 + 5  # .long() truncates
    with pytest.raises(ValueError, match="world space"):
        action_tokens(torch.tensor([2.0] + [0.0] * 15))


def test_vocab_layout_and_first_image_token_rule():
    v = Vocab(image_vocab_size=16384, tokens_per_image=540)
    assert v.size == 16452 and v.tokens_per_step == 556 and v.action_offset == 16384
    lo, hi = v.ranges()
    assert (lo[0].item(), hi[0].item()) == (1, 16383)  # a frame's first token is never code 0
    assert (lo[1].item(), hi[1].item()) == (0, 16383) and (lo[539].item(), hi[539].item()) == (0, 16383)
    assert (lo[540].item(), hi[540].item()) == (16384, 16385)  # button 0
    assert (lo[551].item(), hi[551].item()) == (16384 + 22, 16384 + 23)  # button 11
    assert [(lo[552 + j].item() - 16384, hi[552 + j].item() - 16384) for j in range(4)] == [
        (24, 34), (35, 45), (46, 56), (57, 67)]


def test_interleave_and_split():
    v = Vocab(image_vocab_size=10, tokens_per_image=3)
    img = torch.arange(2 * 2 * 3).reshape(2, 2, 3) % 10
    act = torch.arange(2 * 2 * 16).reshape(2, 2, 16) % 68
    ids = v.interleave(img, act)
    assert ids.shape == (2, 2 * 19)
    assert ids[0, :3].tolist() == img[0, 0].tolist()
    assert ids[0, 3:19].tolist() == (act[0, 0] + 10).tolist()
    assert ids[0, 19:22].tolist() == img[0, 1].tolist()
    i2, a2 = v.split(ids)
    assert torch.equal(i2, img) and torch.equal(a2, act)


def test_model_boundaries_reject_bad_input():
    m = load_model("tiny")
    with pytest.raises(ValueError, match=r"frames: expected uint8 frames of shape \(N, 180, 300, 3\)"):
        m.encode_frames(np.zeros((1, 180, 300, 4), np.uint8))
    with pytest.raises(ValueError, match=r"frames: expected dtype uint8"):
        m.encode_frames(np.zeros((1, 180, 300, 3), np.float32))
    with pytest.raises(ValueError, match=r"tokens: image token ids must lie in \[0, 63\]"):
        m.decode_tokens(torch.full((1, 60), 64))
    with pytest.raises(ValueError, match=r"token_ids: ids must lie"):
        m.logits(torch.full((1, 5), 10**6))
    with pytest.raises(ValueError, match="block size"):
        m.logits(torch.zeros((1, 761), dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite"):
        m.action_ids(np.full((2, 16), np.nan, np.float32))
    tokens = m.encode_frames(np.zeros((3, 180, 300, 3), np.uint8))
    assert tokens.shape == (3, 60) and tokens.dtype == torch.long
    frames = m.decode_tokens(tokens)
    assert frames.shape == (3, 180, 300, 3) and frames.dtype == torch.uint8
    assert m.logits(torch.zeros((2, 76), dtype=torch.long)).shape == (2, 76, 132)
