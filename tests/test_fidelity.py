"""Fidelity measures: the shift estimator and the rollout comparison."""

import numpy as np
import pytest

from wham_gym import load_model
from wham_gym.data.episodes import Episode
from wham_gym.fidelity import horizontal_shift, rollout_fidelity


def test_horizontal_shift_finds_a_known_shift():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (180, 400, 3), dtype=np.uint8)
    a, b = wide[:, 50:350], wide[:, 63:363]  # the view moved 13 px: a right turn
    assert horizontal_shift(a, b) == 13
    assert horizontal_shift(b, a) == -13
    assert horizontal_shift(a, a) == 0


def test_rollout_fidelity_reports_each_horizon():
    model = load_model("tiny")
    rng = np.random.default_rng(1)
    T = 20
    ep = Episode(images=rng.integers(0, 256, (T, 3, 180, 300), dtype=np.uint8),
                 wham_actions=np.tile(np.array([0] * 12 + [5] * 4, np.float32), (T, 1)))
    out = rollout_fidelity(model, [ep], horizons=(1, 5), num=2)
    assert set(out) == {1, 5} and all(np.isfinite(v["psnr"]) and -1 <= v["ssim"] <= 1 for v in out.values())
    with pytest.raises(ValueError, match="horizon"):
        rollout_fidelity(model, [ep], horizons=(30,), num=1)
