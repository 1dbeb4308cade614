"""stable-baselines3: check_env, the WHAMVecEnv adapter, and short PPO / SAC runs on the tiny model."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import VecEnvWrapper

from wham_gym.env import WHAMEnv
from wham_gym.sb3 import REPLAY_BUDGET_BYTES, WHAMVecEnv, make_sac, replay_buffer_size


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def test_sb3_check_env(tiny):
    check_env(WHAMEnv(tiny), warn=False)
    check_env(WHAMEnv(tiny, obs_mode="both"), warn=False)


def test_vecenv_semantics(tiny):
    venv = WHAMVecEnv(2, tiny, max_episode_steps=2, render_mode="rgb_array")
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (2, 180, 300, 3) and venv.reset_infos[0]["step"] == 0
    a = np.zeros((2, 16), np.float32)
    _, rew, dones, infos = venv.step(a)
    assert rew.dtype == np.float32 and not dones.any() and infos[1]["step"] == 1 and "nll" in infos[1]
    obs, _, dones, infos = venv.step(a)
    assert dones.all()
    for i in range(2):
        assert infos[i]["TimeLimit.truncated"] is True and infos[i]["step"] == 2
        assert infos[i]["terminal_observation"].shape == (180, 300, 3)
        assert not np.array_equal(infos[i]["terminal_observation"], obs[i])  # obs is the reset one
        assert venv.reset_infos[i]["step"] == 0
    # Seeding through SB3 reproduces the run.
    venv.seed(3)
    again = venv.reset()
    venv.seed(3)
    assert np.array_equal(venv.reset(), again)
    assert venv.render().shape == (360, 300, 3)  # SB3 tiles 2 frames one above the other
    assert venv.get_attr("max_episode_steps") == [2, 2] and venv.get_attr("num_envs", 1) == [2]
    venv.set_attr("max_episode_steps", 5)
    assert venv.venv.max_episode_steps == 5
    assert venv.env_method("current_frames", indices=[0])[0].shape == (2, 180, 300, 3)
    assert venv.env_is_wrapped(VecEnvWrapper) == [False, False]
    venv.close()


def test_replay_buffer_default():
    box = spaces.Box(0, 255, (180, 300, 3), np.uint8)
    n = replay_buffer_size(box)
    assert n == REPLAY_BUDGET_BYTES // (2 * 180 * 300 * 3) and 2 * n * box.shape[0] * 300 * 3 <= REPLAY_BUDGET_BYTES


def test_ppo_cnn_full_frames(tiny):
    venv = WHAMVecEnv(2, tiny, max_episode_steps=10)
    model = PPO("CnnPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=64)))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)  # 1 rollout of 16 steps x 2 envs (each env's episode truncated at step 10), then 1 update
    assert model.num_timesteps >= 32
    assert any(not torch.equal(b, p) for b, p in zip(before, model.policy.parameters()))
    assert model.observation_space.shape == (3, 180, 300)  # SB3 transposed our channel-last frames


class Downscale(VecEnvWrapper):
    """Every 4th pixel: 45x75 frames, so SAC's three CNNs train quickly on CPU."""

    def __init__(self, venv):
        super().__init__(venv, observation_space=spaces.Box(0, 255, (45, 75, 3), np.uint8))

    def reset(self):
        return self.venv.reset()[:, ::4, ::4]

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = info["terminal_observation"][::4, ::4]
        return obs[:, ::4, ::4], rew, dones, infos


def test_sac_small_buffer(tiny):
    venv = Downscale(WHAMVecEnv(2, tiny, max_episode_steps=30))
    model = make_sac(venv, buffer_size=200, learning_starts=32, batch_size=16, train_freq=4, seed=0, device="cpu")
    assert model.replay_buffer.buffer_size == 100  # per env
    model.learn(96)
    assert model.num_timesteps >= 96 and model.replay_buffer.size() > 32


def _fail_to_build():
    raise OSError("no such world model: /nowhere")


def _die():
    import os

    os._exit(3)


def test_sharded_dreams_step_as_in_process_shards_would_and_report_child_errors(tiny):
    """Dreams sharded over child processes are the in-process ConcatVecEnv of the same shards, draw for draw
    (seeds, autoreset, terminal observations, reset infos); a child's failure reaches the parent with its cause."""
    from wham_gym.sb3 import ConcatVecEnv, ProcessVecEnv, sharded_dreams

    kw = dict(obs_mode="tokens", max_episode_steps=3)
    sharded = sharded_dreams(5, "tiny", 2, **kw)
    local = ConcatVecEnv([WHAMVecEnv(3, tiny, **kw), WHAMVecEnv(2, tiny, **kw)])
    try:
        assert sharded.num_envs == 5 and sharded.observation_space == local.observation_space
        assert sharded.seed(11) == local.seed(11)
        assert np.array_equal(sharded.reset(), local.reset())
        rng = np.random.default_rng(0)
        for _ in range(4):  # past the time limit: every env ends once and restarts
            actions = np.concatenate([rng.integers(0, 2, (5, 12)), rng.uniform(-1, 1, (5, 4))], 1).astype(np.float32)
            sharded.step_async(actions)
            local.step_async(actions)
            (o1, r1, d1, i1), (o2, r2, d2, i2) = sharded.step_wait(), local.step_wait()
            assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(d1, d2)
            for a, b in zip(i1, i2):
                assert a.keys() == b.keys()
                if "terminal_observation" in a:
                    assert np.array_equal(a["terminal_observation"], b["terminal_observation"])
            assert [x.keys() for x in sharded.reset_infos] == [x.keys() for x in local.reset_infos]
        assert d1.sum() == 0 and sharded.get_attr("num_envs") == [3, 3, 3, 2, 2]
    finally:
        sharded.close()
        local.close()
    with pytest.raises(RuntimeError, match="no such world model: /nowhere"):
        ProcessVecEnv(_fail_to_build)
    with pytest.raises(RuntimeError, match="exited \\(code 3\\)"):
        ProcessVecEnv(_die)
    with pytest.raises(ValueError, match="shards: expected 1 to num_envs"):
        sharded_dreams(2, "tiny", 3)
