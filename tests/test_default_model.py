"""The embedded default model: small, loads with no download, and its env passes the checkers."""

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from wham_gym import load_model
from wham_gym.model import DEFAULT_MODEL_DIR


def test_default_model_is_embedded_and_small():
    weights = [DEFAULT_MODEL_DIR / f for f in ("model.safetensors", "reward.safetensors")]
    assert all(w.is_file() for w in weights)
    assert sum(w.stat().st_size for w in weights) <= 20 * 1024 * 1024
    model = load_model("default")
    assert model.card["name"] == "wham-doom-small" and not model.is_official
    assert model.reward_model is not None
    assert (model.config.frame_height, model.config.frame_width) == (180, 300)


def test_default_env_passes_the_checker_and_starts_from_real_frames():
    env = gym.make("wham_gym/WHAM-v0").unwrapped  # no model argument: the embedded default
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (180, 300, 3) and obs.std() > 10  # a Doom frame from the shipped prompts, not flat gray
    obs2, reward, terminated, truncated, info = env.step(np.zeros(16, np.float32))
    assert obs2.shape == (180, 300, 3) and np.isfinite(reward) and info["step"] == 1
