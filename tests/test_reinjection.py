"""Reinjection: real frames reach the agent when scheduled; replay stays aligned; retrieval finds exact frames."""

import numpy as np
import pytest
import torch

from wham_gym.data.episodes import Episode
from wham_gym.env import WHAMVectorEnv
from wham_gym.reinjection import Reinjection, ReplaySource, RetrievalSource, Schedule


def episode(rng, T=30):
    acts = np.zeros((T, 16), np.float32)
    acts[:, 12:] = rng.integers(0, 11, (T, 4))
    acts[:, :12] = rng.integers(0, 2, (T, 12))
    return Episode(images=rng.integers(0, 256, (T, 3, 180, 300), dtype=np.uint8), wham_actions=acts)


def test_schedule_every_k_and_on_uncertainty():
    steps = torch.tensor([1, 5, 10, 15])
    nll = torch.tensor([0.1, 0.1, 0.1, 9.0])
    assert Schedule(every=5).due(steps, nll).tolist() == [False, True, True, True]
    assert Schedule(nll_above=1.0).due(steps, nll).tolist() == [False, False, False, True]
    assert Schedule(every=10, nll_above=1.0).due(steps, nll).tolist() == [False, False, True, True]
    assert not Schedule().due(steps, nll).any()
    with pytest.raises(ValueError):
        Schedule(every=-1)


def test_replay_reinjects_the_recorded_frames_every_k(tiny):
    rng = np.random.default_rng(0)
    eps = [episode(rng), episode(rng)]
    source = ReplaySource(eps, num_envs=3)
    env = WHAMVectorEnv(3, tiny, reinjection=Reinjection(source, Schedule(every=3)), obs_mode="both")
    env.reset(seed=0)
    for t in range(1, 8):
        obs, _, term, trunc, info = env.step(np.zeros((3, 16), np.float32))  # ignored: the recording drives
        assert info["reinjected"].tolist() == [t % 3 == 0] * 3
        real = source.frames(np.arange(3))  # the recording, one frame further per step
        if t % 3 == 0:
            assert np.array_equal(obs["pixels"], real)
            assert np.array_equal(obs["tokens"], tiny.encode_frames(real).numpy())
            assert torch.equal(env.engine.images[:, -1], tiny.encode_frames(real))
        else:
            assert not np.array_equal(obs["pixels"], real)
    # The dream took the recorded actions, not the agent's zeros.
    ctx_actions = env.engine.context_tokens(0)[1][-1]
    e, t = source.episode[0], source.t[0]
    assert torch.equal(ctx_actions, tiny.action_ids(torch.from_numpy(eps[e].actions[t - 1])))


def test_replay_end_truncates_the_dream(tiny):
    rng = np.random.default_rng(1)
    T = 14
    source = ReplaySource([episode(rng, T=T)], num_envs=1)
    env = WHAMVectorEnv(1, tiny, reinjection=Reinjection(source, Schedule(every=0)), prompt_frames=9)
    env.reset(seed=0)
    t0 = int(source.t[0])  # the recorded frame the prompt ends on
    truncs = [bool(env.step(np.zeros((1, 16), np.float32))[3][0]) for _ in range(T - 1 - t0)]
    assert truncs == [False] * (T - 2 - t0) + [True]  # ends on the last recorded frame
    assert source.t[0] == T - 1


def test_retrieval_returns_the_exact_frame_when_in_the_bank(tiny):
    rng = np.random.default_rng(2)
    bank = rng.integers(0, 256, (40, 180, 300, 3), dtype=np.uint8)
    source = RetrievalSource(tiny, bank, chunk=7)  # several chunks
    query = tiny.encode_frames(bank[[3, 17, 39]])
    found = source.nearest(query)
    assert torch.equal(source.tokens[found].long(), query)  # exact token match (a duplicate code pattern may sit earlier)
    assert found.tolist() == [int((source.tokens == q).all(1).nonzero()[0]) for q in query]
    assert source.tokens.dtype == torch.int16  # 2 bytes per token: a million frames of 135 tokens in ~270 MB
    np.testing.assert_array_equal(source.frames_for(query), bank[found.numpy()])  # raw frames kept


def test_tokens_only_retrieval_bank(tiny):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (12, 180, 300, 3), dtype=np.uint8)
    tokens = tiny.encode_frames(frames)
    source = RetrievalSource.from_tokens(tiny, tokens, chunk=5)
    assert source.frames_bank is None and len(source) == 12
    found = source.nearest(tokens[[2, 9]])
    assert torch.equal(source.tokens[found].long(), tokens[[2, 9]])
    # No raw frames: the reinjected frame is the bank tokens' decoding.
    np.testing.assert_array_equal(source.frames_for(tokens[[2, 9]]), tiny.decode_tokens(tokens[found]).numpy())
    with pytest.raises(ValueError, match="bank tokens must be"):
        RetrievalSource.from_tokens(tiny, tokens[:, :5])


def test_retrieval_with_uncertainty_schedule_fires_when_crossed(tiny):
    rng = np.random.default_rng(3)
    bank = rng.integers(0, 256, (16, 180, 300, 3), dtype=np.uint8)
    env = WHAMVectorEnv(2, tiny, reinjection=Reinjection(RetrievalSource(tiny, bank), Schedule(nll_above=0.0)))
    env.reset(seed=0)
    obs, _, _, _, info = env.step(np.zeros((2, 16), np.float32))
    assert info["reinjected"].all()  # every NLL is above 0
    bank_tokens = tiny.encode_frames(bank)
    assert all((bank_tokens == t).all(1).any() for t in env.engine.images[:, -1])
    env = WHAMVectorEnv(2, tiny, reinjection=Reinjection(RetrievalSource(tiny, bank), Schedule(nll_above=1e9)))
    env.reset(seed=0)
    assert not env.step(np.zeros((2, 16), np.float32))[4]["reinjected"].any()


def test_replay_runs_through_autoresets(tiny):
    rng = np.random.default_rng(4)
    source = ReplaySource([episode(rng, T=12), episode(rng, T=16)], num_envs=2)
    env = WHAMVectorEnv(2, tiny, reinjection=Reinjection(source, Schedule(every=2)), prompt_frames=4)
    env.reset(seed=0)
    ends = 0
    for _ in range(40):
        _, _, term, trunc, info = env.step(np.zeros((2, 16), np.float32))
        ends += int(trunc.sum())
    assert ends >= 4  # several recordings ran out and the envs restarted from new replays


def test_lockstep_stays_aligned_through_resets(tiny):
    pytest.importorskip("vizdoom")
    from functools import partial

    from wham_gym.games.doom import DoomEnv
    from wham_gym.reinjection import LockstepSource

    source = LockstepSource([partial(DoomEnv, scenario="defend_the_center", max_steps=4)] * 2, asynchronous=False)
    env = WHAMVectorEnv(2, tiny, reinjection=Reinjection(source, Schedule(every=1)), obs_mode="both")
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.engine.images[:, -1].numpy(), tiny.encode_frames(source.obs).numpy())
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(10):
        a = rng.uniform(-1, 1, (2, 16)).astype(np.float32)
        a[:, :12] = 0
        obs, _, term, trunc, info = env.step(a)
        stepped = info["_reinjected"] & ~(info["step"] == 0)
        # Every stepped env sees the live game's frame, and the dream's context holds its tokens.
        assert np.array_equal(obs["pixels"][stepped], source.obs[stepped])
        assert np.array_equal(env.engine.images[:, -1].numpy(), tiny.encode_frames(source.obs).numpy())
        ends += int((term | trunc).sum())
    assert ends >= 2  # the games' 4-step timeouts ended the dream episodes, and the resets realigned them
    env.close()


def test_lockstep_same_step_reinjects_final_frames_and_resets_together(tiny):
    """SB3's autoreset: the step that ends a game shows its last frame; the dream restarts from the new game."""
    pytest.importorskip("vizdoom")
    from functools import partial

    from gymnasium.vector import AutoresetMode

    from wham_gym.games.doom import DoomEnv
    from wham_gym.reinjection import LockstepSource

    source = LockstepSource([partial(DoomEnv, scenario="defend_the_center", max_steps=3)] * 2, asynchronous=False)
    env = WHAMVectorEnv(2, tiny, reinjection=Reinjection(source, Schedule(every=1)), obs_mode="both",
                        autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(seed=0)
    ends = 0
    for t in range(7):
        obs, _, term, trunc, info = env.step(np.zeros((2, 16), np.float32))
        done = term | trunc
        assert list(done) == [(t + 1) % 3 == 0] * 2  # the games' 3-step timeouts end the dreams
        # The dream's context holds the frame the game shows now: a new game's first frame after an end.
        assert np.array_equal(env.engine.images[:, -1].numpy(), tiny.encode_frames(source.obs).numpy())
        if done.any():
            ends += int(done.sum())
            for i in np.flatnonzero(done):  # the final observation is the game's last frame, reinjected
                assert np.array_equal(info["final_obs"][i]["pixels"], source.step_obs[i])
            assert not np.array_equal(source.step_obs, source.obs)
        else:
            assert np.array_equal(obs["pixels"], source.obs)
    assert ends == 4
    env.close()


def test_default_schedule_comes_from_the_model_card(tiny):
    from wham_gym.reinjection import FALLBACK_SCHEDULE, default_schedule

    bank = np.random.default_rng(5).integers(0, 256, (3, 180, 300, 3), dtype=np.uint8)
    env = WHAMVectorEnv(1, tiny, reinjection=Reinjection(RetrievalSource(tiny, bank)))
    assert env.reinjection.schedule == FALLBACK_SCHEDULE == Schedule(every=10)
    card = dict(tiny.card)
    try:
        tiny.card = {**card, "reinjection": {"every": 20, "nll_above": 1.5}}
        assert default_schedule(tiny) == Schedule(every=20, nll_above=1.5)
    finally:
        tiny.card = card


def test_lockstep_whole_window_reinjection(tiny):
    """window=True: the dream's whole context becomes the game's recent frames, not just the newest."""
    pytest.importorskip("vizdoom")
    from functools import partial

    from wham_gym.games.doom import DoomEnv
    from wham_gym.reinjection import LockstepSource

    source = LockstepSource([partial(DoomEnv, scenario="defend_the_center")] * 2, asynchronous=False)
    env = WHAMVectorEnv(2, tiny, reinjection=Reinjection(source, Schedule(every=3), window=True))
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for t in range(1, 7):
        a = rng.uniform(-1, 1, (2, 16)).astype(np.float32)
        a[:, :12] = 0
        env.step(a)
        if t % 3 == 0:  # every context frame is the game's, encoded
            k = int(env.engine.n_frames.min())
            real = np.stack([np.stack(list(h)[-k:]) for h in source.history])
            want = tiny.encode_frames(real.reshape(-1, 180, 300, 3)).reshape(2, k, -1)
            assert k == t + 1 and torch.equal(env.engine.images[:, -k:], want)
    with pytest.raises(ValueError, match="window=True needs"):
        Reinjection(RetrievalSource(tiny, real[0]), window=True)
    env.close()
