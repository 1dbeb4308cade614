"""WHAMEnv / WHAMVectorEnv: checkers, registration, seeding, autoreset semantics, obs modes, prompts, bad input."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import wham_gym  # noqa: F401  (registers the envs)
from wham_gym.env import WHAMEnv, WHAMVectorEnv
from wham_gym.prompts import PromptBank
from wham_gym.rewards import LearnedRewardModel, StepContext


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def actions_for(rng, n):
    a = rng.uniform(-1, 1, (n, 16)).astype(np.float32)
    a[:, :12] = rng.random((n, 12)) < 0.3
    return a


def make(tiny, n=2, **kw):
    return WHAMVectorEnv(n, tiny, **kw)


def write_npz_episode(path, T=12):
    """WHAM's sample layout: images (T,3,180,300) uint8, actions (T,16) with sticks as bins."""
    images = np.empty((T, 3, 180, 300), np.uint8)
    for t in range(T):
        images[t] = (20 * t) % 256
        images[t, 0, : 10 * t] = 255
    actions = np.zeros((T, 16), np.float32)
    actions[:, 12:] = np.arange(T)[:, None] % 11
    actions[:, 0] = np.arange(T) % 2
    np.savez(path, images=images, actions=actions)
    return images.transpose(0, 2, 3, 1)


def write_demonstrator(folder, T=3):
    from PIL import Image

    folder.mkdir()
    table = {}
    for t in range(T):
        frame = np.full((180, 300, 3), 60 * t, np.uint8)
        Image.fromarray(frame).save(folder / f"image{t}.png")
        table[f"image{t}.png"] = [1.0] + [0.0] * 11 + [0.5, -0.5, 0.0, 1.0]
    (folder / "actions.json").write_text(json.dumps(table))


# ---------------------------------------------------------------- checkers and registration
def test_gymnasium_check_env_via_make(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # check_env also builds a render_mode="human" copy
    env = gym.make("wham_gym/WHAM-v0", model="tiny", render_mode="rgb_array")
    assert env.spec.max_episode_steps == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings: none allowed
        check_env(env.unwrapped)
    env.close()


def test_gymnasium_check_env_dict_obs(tiny):
    env = WHAMEnv(tiny, obs_mode="both")
    check_env(env, skip_render_check=True)
    assert isinstance(env.observation_space, gym.spaces.Dict)


def test_make_vec_vector_entry_point():
    envs = gym.make_vec("wham_gym/WHAM-v0", num_envs=3, vectorization_mode="vector_entry_point", model="tiny")
    assert isinstance(envs.unwrapped, WHAMVectorEnv)
    assert envs.unwrapped.max_episode_steps == 1000  # make_vec passes the registry's limit
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP == envs.unwrapped.autoreset_mode
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 180, 300, 3) and obs.dtype == np.uint8 and obs in envs.observation_space
    obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
    assert obs in envs.observation_space and rew.shape == term.shape == trunc.shape == (3,)
    assert info["step"].tolist() == [1, 1, 1] and info["_nll"].all() and not info["reinjected"].any()
    envs.close()


# ---------------------------------------------------------------- seeding
def run(env, seed, actions):
    out = [env.reset(seed=seed)[0]]
    for a in actions:
        o, r, te, tr, info = env.step(a)
        out.append((o, r, info["nll"]))
    return out


def test_seeding_bit_identical(tiny):
    rng = np.random.default_rng(0)
    acts = [actions_for(rng, 3) for _ in range(3)]
    a = run(make(tiny, 3, obs_mode="both"), 7, acts)
    b = run(make(tiny, 3, obs_mode="both"), 7, acts)
    c = run(make(tiny, 3, obs_mode="both"), 8, acts)
    for x, y in zip(a[1:], b[1:]):
        assert np.array_equal(x[0]["pixels"], y[0]["pixels"]) and np.array_equal(x[0]["tokens"], y[0]["tokens"])
        assert np.array_equal(x[2], y[2])
    assert not all(np.array_equal(x[0]["tokens"], y[0]["tokens"]) for x, y in zip(a[1:], c[1:]))
    # Slots have distinct streams, and a later seeded reset of the same env reproduces the run.
    assert not np.array_equal(a[-1][0]["tokens"][0], a[-1][0]["tokens"][1])
    env = make(tiny, 3, obs_mode="tokens")
    first, second = run(env, 7, acts), run(env, 7, acts)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(first[1:], second[1:]))


# ---------------------------------------------------------------- autoreset semantics
class TerminateAt:
    """Terminate env ``env`` when its episode reaches ``step``."""

    needs_frames = False

    def __init__(self, env, step):
        self.env, self.step = env, step

    def __call__(self, ctx):
        out = torch.zeros(ctx.num_envs, dtype=torch.bool)
        out[self.env] = ctx.steps[self.env] == self.step
        return out


def rollout(env, seed, acts):
    obs, _ = env.reset(seed=seed)
    steps = [env.step(a) for a in acts]
    return obs, steps


def test_next_step_autoreset(tiny):
    rng = np.random.default_rng(1)
    acts = [actions_for(rng, 2) for _ in range(5)]
    env = make(tiny, 2, obs_mode="tokens", termination_fn=TerminateAt(0, 2), max_episode_steps=4)
    _, s = rollout(env, 3, acts)
    term = [x[2].tolist() for x in s]
    trunc = [x[3].tolist() for x in s]
    assert term == [[False, False], [True, False], [False, False], [False, False], [True, False]]  # 2 steps again
    assert trunc == [[False, False], [False, False], [False, False], [False, True], [False, False]]
    # Step 3 resets env 0: reward 0, a reset info (step 0, no uncertainty), then counting restarts.
    info3 = s[2][4]
    assert info3["step"].tolist() == [0, 3] and info3["_nll"].tolist() == [False, True]
    assert s[3][4]["step"].tolist() == [1, 4] and s[4][4]["step"].tolist() == [2, 0]
    assert s[2][1][0] == 0.0
    # The reset observation is the new prompt's last frame; env 1 never notices env 0's reset.
    assert np.array_equal(s[2][0][0], env.engine.context_tokens(0)[0][-3].numpy())
    free = make(tiny, 2, obs_mode="tokens", max_episode_steps=100)
    _, s_free = rollout(free, 3, acts)
    for k in range(4):  # env 1 is reset by truncation at step 4 in the first run, only then do they part
        assert np.array_equal(s[k][0][1], s_free[k][0][1])
    assert not np.array_equal(s[2][0][0], s_free[2][0][0])


def test_same_step_autoreset_matches_next_step(tiny):
    rng = np.random.default_rng(2)
    acts = [actions_for(rng, 2) for _ in range(4)]
    kw = dict(obs_mode="both", termination_fn=TerminateAt(1, 2))
    _, nxt = rollout(make(tiny, 2, **kw), 5, acts)
    same_env = make(tiny, 2, autoreset_mode=AutoresetMode.SAME_STEP, **kw)
    assert same_env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    _, same = rollout(same_env, 5, acts)
    info = same[1][4]
    assert info["_final_obs"].tolist() == [False, True] and info["_final_info"].tolist() == [False, True]
    assert info["final_obs"][0] is None
    # The final observation is what NEXT_STEP returned at the done step, the reset one what it returns next.
    assert np.array_equal(info["final_obs"][1]["pixels"], nxt[1][0]["pixels"][1])
    assert np.array_equal(same[1][0]["tokens"][1], nxt[2][0]["tokens"][1])
    assert info["final_info"]["step"][1] == 2 and info["final_info"]["_nll"].tolist() == [False, True]
    assert info["step"].tolist() == [2, 0] and same[1][2].tolist() == [False, True]
    assert same[2][4]["step"].tolist() == [3, 1]
    assert np.array_equal(same[1][0]["tokens"][0], nxt[1][0]["tokens"][0])  # env 0 undisturbed


def test_disabled_autoreset_and_reset_mask(tiny):
    rng = np.random.default_rng(3)
    acts = [actions_for(rng, 3) for _ in range(5)]
    env = make(tiny, 3, obs_mode="tokens", autoreset_mode="DISABLED", max_episode_steps=2)
    ref = make(tiny, 3, obs_mode="tokens", autoreset_mode="DISABLED")
    env.reset(seed=4), ref.reset(seed=4)
    outs = [env.step(a) for a in acts[:2]]
    [ref.step(a) for a in acts[:2]]
    assert outs[1][3].all()
    held = outs[1][0].copy()
    obs, info = env.reset(options={"reset_mask": np.array([False, True, False])})
    assert np.array_equal(outs[1][0], held)  # observations handed out earlier are never modified
    assert np.array_equal(obs[[0, 2]], held[[0, 2]]) and info["_step"].tolist() == [False, True, False]
    assert np.array_equal(obs[1], env.engine.context_tokens(1)[0][-1].numpy())
    for a in acts[2:]:
        o, _, _, tr, info = env.step(a)
        r = ref.step(a)[0]
        assert np.array_equal(o[[0, 2]], r[[0, 2]])  # resetting env 1 never disturbs envs 0 and 2
    assert info["step"].tolist() == [5, 3, 5] and tr.tolist() == [True, True, True]
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([1, 0, 0])})
    with pytest.raises(ValueError, match="at least one"):
        env.reset(options={"reset_mask": np.zeros(3, bool)})


# ---------------------------------------------------------------- observations
def test_obs_modes_and_return_torch(tiny):
    tpi = tiny.config.tokens_per_image
    env = make(tiny, 2, obs_mode="tokens")
    assert not env._decode  # tokens mode with token-only reward/termination skips decoding
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, tpi) and obs.dtype == np.int64 and obs in env.observation_space
    assert isinstance(env.single_observation_space, gym.spaces.MultiDiscrete)
    assert env.render_mode is None and env.current_frames().shape == (2, 180, 300, 3)

    env = make(tiny, 2, obs_mode="both", return_torch=True, predict_actions=True)
    obs, info = env.reset(seed=0)
    assert torch.is_tensor(obs["pixels"]) and obs["pixels"].dtype == torch.uint8 and obs["tokens"].shape == (2, tpi)
    assert torch.equal(obs["pixels"], tiny.decode_tokens(obs["tokens"]))
    obs, rew, term, trunc, info = env.step(torch.zeros(2, 16))
    assert all(torch.is_tensor(x) for x in (rew, term, trunc, info["nll"], info["_nll"]))
    assert obs["pixels"].shape == (2, 180, 300, 3) and obs["pixels"].device == env.device
    pred = info["predicted_action"]
    assert pred.shape == (2, 16) and env.single_action_space.contains(pred[0].numpy())


def test_frame_size_adapter_tiny_taming():
    env = WHAMVectorEnv(2, "tiny-taming")
    obs, _ = env.reset(seed=0)  # the gray 300x180 prompt is resized to 16x16 for the model
    assert obs.shape == (2, 180, 300, 3) and obs in env.observation_space
    obs, *_ = env.step(np.zeros((2, 16), np.float32))
    assert obs.shape == (2, 180, 300, 3)
    small = env.model.decode_tokens(env.engine.images[:, -1])
    assert small.shape == (2, 16, 16, 3)
    # Bilinear upscaling of a 16x16 frame: the centre of each 11.25x18.75 cell keeps the source pixel.
    assert np.abs(obs[:, 5, 9].astype(int) - small[:, 0, 0].numpy().astype(int)).max() <= 2


# ---------------------------------------------------------------- rewards
class TokenReward(LearnedRewardModel):
    calls = 0

    def predict(self, ctx):
        TokenReward.calls += 1
        assert ctx.frames is None and ctx.prev_tokens.shape == ctx.tokens.shape
        return ctx.tokens.float().mean(1), (ctx.tokens[:, 0] % 2).float()


def test_reward_fns_and_learned_interface(tiny):
    model = TokenReward()
    env = make(tiny, 3, obs_mode="tokens", reward_fn=model.reward, termination_fn=model.termination)
    env.reset(seed=0)
    obs, rew, term, *_ = env.step(np.zeros((3, 16), np.float32))
    assert TokenReward.calls == 1  # one forward pass serves reward and termination
    assert np.allclose(rew, obs.mean(1)) and np.array_equal(term, obs[:, 0] % 2 == 1)

    def brightness(ctx: StepContext):
        return ctx.frames.float().mean((1, 2, 3)) / 255 + ctx.steps

    env = make(tiny, 2, reward_fn=brightness)
    env.reset(seed=0)
    obs, rew, *_ = env.step(np.zeros((2, 16), np.float32))
    assert np.allclose(rew, obs.reshape(2, -1).mean(1) / 255 + 1, atol=1e-5)
    env = make(tiny, 2, reward_fn=lambda ctx: torch.zeros(5))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"reward_fn must return .* shape \(2,\)"):
        env.step(np.zeros((2, 16), np.float32))


# ---------------------------------------------------------------- bad input
def test_bad_actions(tiny):
    env = make(tiny, 3, obs_mode="tokens")
    env.reset(seed=0)
    bad = np.zeros((3, 16), np.float32)
    bad[1, 13] = np.nan
    with pytest.raises(ValueError, match=r"env 1, dimension 13 \(left_stick_y\)"):
        env.step(bad)
    bad[1, 13] = -np.inf
    with pytest.raises(ValueError, match="env 1, dimension 13"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"expected shape \(3, 16\)"):
        env.step(np.zeros((2, 16), np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(16,\)"):
        WHAMEnv(tiny).step(np.zeros(15, np.float32))

    # Out-of-bound actions are clipped, with one warning per env.
    wild = np.full((3, 16), 3.0, np.float32)
    wild[:, 12:] = -7.0
    clipped = np.clip(wild, env.single_action_space.low, env.single_action_space.high)
    ref = make(tiny, 3, obs_mode="tokens")
    env.reset(seed=1), ref.reset(seed=1)
    with pytest.warns(UserWarning, match="clipped"):
        got = env.step(wild)[0]
    assert np.array_equal(got, ref.step(clipped)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step(wild)


def test_bad_construction(tiny, monkeypatch):
    with pytest.raises(ValueError, match="obs_mode"):
        make(tiny, obs_mode="rgb")
    with pytest.raises(ValueError, match="autoreset_mode"):
        make(tiny, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="unknown keys"):
        make(tiny).reset(options={"promt": None})
    with pytest.raises(ValueError, match="HumanRendering"):
        make(tiny, render_mode="human")


def test_env_settings_live_on_its_parts(tiny):
    env = make(tiny, 2, obs_mode="tokens", autoreset_mode="same_step", max_episode_steps=3)
    assert env.autoreset_mode is env.autoreset.mode is AutoresetMode.SAME_STEP
    assert env.max_episode_steps == env.signals.max_episode_steps == 3 and env.reward_fn is env.signals.reward_fn
    env.max_episode_steps = 1  # set through the env (SB3's set_attr), read by the signals at the next step
    env.reset(seed=0)
    *_, truncated, info = env.step(np.zeros((2, 16), np.float32))
    assert truncated.all() and info["_final_obs"].all()
    with pytest.raises(ValueError, match="max_episode_steps"):
        make(tiny, max_episode_steps=0)


# ---------------------------------------------------------------- prompts
def test_prompts_from_npz_and_demonstrator(tiny, tmp_path):
    frames = write_npz_episode(tmp_path / "ep.npz", T=12)
    write_demonstrator(tmp_path / "demo", T=3)
    env = make(tiny, 4, prompts=tmp_path)
    assert len(env.prompt_bank) == 2
    env.reset(seed=11)
    # The env draws prompts exactly as the bank does under the same seed.
    expected = env.prompt_bank.sample(np.random.default_rng(11), 4, env.prompt_frames)
    assert {p.source.endswith("ep.npz") for p in expected} == {True, False}  # both sources drawn
    for i, p in enumerate(expected):
        ctx_images, ctx_actions = env.engine.context_tokens(i)
        assert torch.equal(ctx_images, tiny.encode_frames(p.frames))
        assert torch.equal(ctx_actions, tiny.action_ids(torch.from_numpy(p.actions)))
        if p.source.endswith("ep.npz"):
            assert len(p) == 9 and np.array_equal(p.frames, frames[p.start:p.start + 9])
        else:
            assert len(p) == 3 and p.actions[0, 12] == 0.625  # 0.5 lies in bin [0.5, 0.75), middle 0.625
    starts = {p.start for p in PromptBank.from_paths(tmp_path / "ep.npz").sample(np.random.default_rng(0), 20, 9)}
    assert starts == {0, 1, 2, 3}  # random offsets cover every valid start


def test_prompt_sources_errors(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        make(tiny, prompts=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make(tiny, prompts=tmp_path / "nowhere")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        make(tiny, prompts=tmp_path / "broken.npz")


def test_prompt_arrays_and_resizing(tiny):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, 180, 300, 3), dtype=np.uint8)
    acts = actions_for(rng, 2)
    env = make(tiny, 2, prompts=(frames, acts))
    env.reset(seed=0)
    assert torch.equal(env.engine.context_tokens(1)[0], tiny.encode_frames(frames))
    per_slot = rng.integers(0, 256, (2, 1, 180, 300, 3), dtype=np.uint8)
    obs, _ = env.reset(options={"prompt": {"frames": per_slot}})
    assert torch.equal(env.engine.images[:, -1], tiny.encode_frames(per_slot[:, 0]))

    small = rng.integers(0, 256, (2, 90, 150, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="resize_prompts=True"):
        env.reset(options={"prompt": (small, acts[:1])})
    with pytest.raises(ValueError, match=r"actions must have shape \(1 or 2, 16\)"):
        env.reset(options={"prompt": (small, acts[:0])})
    resized = make(tiny, 2, prompts=(small, acts[:1]), resize_prompts=True)
    resized.reset(seed=0)
    assert resized.engine.context_tokens(0)[0].shape == (2, tiny.config.tokens_per_image)


# ---------------------------------------------------------------- rendering
def test_render_rgb_array_one_frame_per_env(tiny):
    env = make(tiny, 3, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frames = env.render()
    assert isinstance(frames, tuple) and len(frames) == 3  # Gymnasium's vector convention
    assert all(np.array_equal(f, o) for f, o in zip(frames, obs))
    obs, *_ = env.step(env.action_space.sample())
    assert np.array_equal(env.render()[2], obs[2])
    single = WHAMEnv(tiny, render_mode="rgb_array")
    obs, _ = single.reset(seed=0)
    assert np.array_equal(single.render(), obs)


def test_gymnasium_record_video_and_human_rendering_wrap_the_vector_env(tiny, tmp_path, monkeypatch):
    from gymnasium.wrappers.vector import HumanRendering, RecordVideo

    env = RecordVideo(make(tiny, 2, render_mode="rgb_array", max_episode_steps=3), str(tmp_path / "videos"),
                      episode_trigger=lambda e: True, disable_logger=True)
    env.reset(seed=0)
    for _ in range(4):
        env.step(env.action_space.sample())
    env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 0
    import av

    with av.open(str(videos[0])) as f:
        frame = next(f.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape[:2] == (180, 600)  # RecordVideo lays the two envs' frames side by side

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a window without a display
    shown = HumanRendering(make(tiny, 2, render_mode="rgb_array"))
    shown.reset(seed=0)
    shown.step(shown.action_space.sample())
    assert shown.window is not None  # drew the two frames (scaled into one frame's size by default)
    shown.close()

    # gym.make gives a single env a window the same way.
    single = gym.make("wham_gym/WHAM-v0", model=tiny, render_mode="human")
    single.reset(seed=0)
    single.close()


def test_env_over_parts_built_by_hand(tiny):
    from wham_gym.engine import DreamEngine
    from wham_gym.reinjection import Reinjection, RetrievalSource, Schedule
    from wham_gym.rollout import Rollout

    engine = DreamEngine(tiny, 3, temperature=0.7, seed=1)
    env = WHAMVectorEnv(model=engine)
    assert env.num_envs == 3 and env.engine is engine and env.engine.sampling["temperature"] == 0.7
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 180, 300, 3)
    frames = np.zeros((4, 180, 300, 3), np.uint8)
    roll = Rollout(DreamEngine(tiny, 2), Reinjection(RetrievalSource(tiny, frames), Schedule(every=1)))
    env = WHAMVectorEnv(2, roll)
    env.reset(seed=0)
    *_, info = env.step(env.action_space.sample())
    assert info["reinjected"].all() and env.rollout is roll
    with pytest.raises(ValueError, match="temperature.*DreamEngine's settings"):
        WHAMVectorEnv(model=engine, temperature=1.0)
    with pytest.raises(ValueError, match="num_envs=5"):
        WHAMVectorEnv(5, engine)
    with pytest.raises(ValueError, match="carries its own"):
        WHAMVectorEnv(2, roll, reinjection=roll.reinjection)


def test_a_hazard_ends_episodes_at_its_rate_reproducibly(tiny):
    """A hazard reward model's termination is sampled: ends come at the predicted rate, from each slot's own
    stream, so the same seed ends the same episodes, and a threshold would never end one."""
    import math

    from wham_gym.model.reward_model import RewardModel, RewardModelConfig
    from wham_gym.rewards import TokenRewardModel

    c = tiny.config
    net = RewardModel(RewardModelConfig(c.image_vocab_size, c.tokens_per_image, termination="hazard"))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.termination.bias.fill_(math.log(0.25 / 0.75))  # a hazard of 0.25 at every step
    learned = TokenRewardModel(net.eval())
    assert learned.sampled_termination

    def ends(seed):
        env = make(tiny, 8, obs_mode="tokens", reward_fn=learned.reward, termination_fn=learned.termination)
        env.reset(seed=seed)
        return np.stack([env.step(np.zeros((8, 16), np.float32))[2] for _ in range(12)])

    first = ends(0)
    assert 0.25 * 96 - 4 * math.sqrt(96 * 0.25 * 0.75) < first.sum() < 0.25 * 96 + 4 * math.sqrt(96 * 0.25 * 0.75)
    assert np.array_equal(ends(0), first) and not np.array_equal(ends(1), first)
    with pytest.raises(ValueError, match="termination: expected one of end_frame, hazard"):
        RewardModelConfig(c.image_vocab_size, c.tokens_per_image, termination="sometimes")
    # Its ends in expectation (training dreams): never an end, and each step's reward pays the expected cost of
    # dying, r * (1 - p * horizon), here with p = 0.25 and a reward of 2 everywhere.
    with torch.no_grad():
        net.reward.bias.fill_(2.0)
    reward_fn, termination_fn = learned.expected_ends(horizon=3.0)
    env = make(tiny, 8, obs_mode="tokens", reward_fn=reward_fn, termination_fn=termination_fn)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, _ = env.step(np.zeros((8, 16), np.float32))
        np.testing.assert_allclose(reward, 2.0 * (1 - 0.25 * 3.0), rtol=1e-5)
        assert not terminated.any() and not truncated.any()
    with pytest.raises(ValueError, match="positive number of steps"):
        learned.expected_ends(horizon=0)
    end_frame_net = RewardModel(RewardModelConfig(c.image_vocab_size, c.tokens_per_image))
    with pytest.raises(ValueError, match="expected ends need a termination hazard"):
        TokenRewardModel(end_frame_net).expected_ends(horizon=100)
    # The hazard reads the frame the action was taken at: the dreamt frame does not change it.
    prev, act = torch.randint(0, 16, (2, c.tokens_per_image)), torch.randint(0, 8, (2, 16))
    net2 = RewardModel(net.config)
    assert torch.equal(net2(prev, act, prev)[1], net2(prev, act, torch.zeros_like(prev))[1])
    # It reads the action unless told not to (reads_action=False: the frame alone decides).
    other = (act + 1) % 8
    assert not torch.equal(net2(prev, act, prev)[1], net2(prev, other, prev)[1])
    blind = RewardModel(RewardModelConfig(c.image_vocab_size, c.tokens_per_image, termination="hazard",
                                          reads_action=False))
    assert blind.actions is None and torch.equal(blind(prev, act, prev)[1], blind(prev, other, prev)[1])
    assert not torch.equal(blind(prev, act, prev)[1], blind(torch.roll(prev, 1, 0), act, prev)[1])
