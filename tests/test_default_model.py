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


def test_take_cover_model_ships_by_name_with_its_card():
    from wham_gym.action_sets import action_set_for
    from wham_gym.model import SHIPPED
    from wham_gym.rewards import EndRiskTermination

    folder = SHIPPED["take_cover"]
    weights = [folder / f for f in ("model.safetensors", "reward.safetensors", "position.safetensors")]
    assert sum(w.stat().st_size for w in weights) <= 20 * 1024 * 1024
    model = load_model("take_cover")
    card = model.card
    assert card["scenario"] == "take_cover" and card["game_kwargs"] == {"render_hud": True}
    assert action_set_for(model).name == "take_cover"  # the dream and its game offer the same actions by name
    assert card["recipe"]["end_frame"] == "black" and card["reinjection"]["every"] >= 1
    assert model.reward_model is not None and model.config.tokens_per_image == 60
    # Its dreams end by the risk its card recommends, calibrated on real transitions; under the random policies (a
    # random preset every step: jitter; held strafes: the data policy) its dreams last as long as the game's, +-20 %.
    ends = card["ends"]
    assert ends["kind"] == "risk" and ends["temperature"] == 0.9
    lengths = card["measured"]["episode_length_blind_policies"]
    assert all(0.8 <= lengths[p]["dream"] / lengths[p]["game"] <= 1.2 for p in ("jitter", "strafe")), lengths
    env = gym.make("wham_gym/WHAM-v0", model="take_cover").unwrapped
    term = env.vector.termination_fn
    assert isinstance(term, EndRiskTermination) and (term.sharpness, term.center) == (ends["sharpness"], ends["center"])
    # ... with the motion term: the position probe ships beside the card and reads a frame's 60 tokens
    assert term.motion is not None and (term.motion.lag, term.motion.weight) == (15, ends["motion"]["weight"])
    assert term.motion.weight < 0 and term.motion.probe.slots == 60 and (folder / ends["motion"]["probe"]).is_file()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (180, 300, 3) and obs.std() > 10  # a real take_cover frame from its shipped prompts
    _, reward, _, _, _ = env.step(np.zeros(16, np.float32))
    assert 2.0 < reward < 5.0  # take_cover pays ~3.5 tics per 10 Hz step while alive
