"""RayVectorEnv on a local Ray: equal to a local WHAMVectorEnv, SB3 over it, faults (killed and hung actors).

One small local Ray instance (2 CPUs, no dashboard, a small object store) serves
the whole module; actors ask for a quarter CPU and run torch with one thread, so
the tests fit a shared 2-core machine. Ray is an optional extra: without it the
module is skipped.
"""

import os
import signal
import sys
import warnings

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

ray = pytest.importorskip("ray")

from wham_gym.cluster import ActorFailure, RayVectorEnv  # noqa: E402
from wham_gym.env import WHAMVectorEnv  # noqa: E402

# pytest-xdist: every test that starts Ray runs on one worker, one after another (setup.cfg); two local
# clusters at once would share /tmp/ray and the cores, and test_cluster_nodes counts Ray processes.
pytestmark = pytest.mark.xdist_group("ray")
SMALL = dict(num_cpus=0.25, threads=1)  # actor resources in these tests


@pytest.fixture(scope="module")
def local_ray(one_thread):
    # This module's functions (the termination below) travel to the actors by value: workers cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def actions_for(rng, n):
    a = rng.uniform(-1, 1, (n, 16)).astype(np.float32)
    a[:, :12] = rng.random((n, 12)) < 0.3
    return a


def assert_same(x, y, where="obs"):
    """Observations and integer/bool data exactly; floats (reward, NLL) to float32 rounding; infos where masked."""
    if isinstance(x, tuple):  # what reset and step return
        assert len(x) == len(y)
        for i, (a, b) in enumerate(zip(x, y)):
            assert_same(a, b, f"{where}[{i}]")
        return
    if isinstance(x, dict):
        assert set(x) == set(y), f"{where}: keys {sorted(x)} != {sorted(y)}"
        for k in x:
            if k.startswith("_"):
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{where}[{k}]")
                continue
            mask = x.get("_" + k)
            if mask is None:
                assert_same(x[k], y[k], f"{where}[{k}]")
            elif isinstance(x[k], dict):
                assert_same(x[k], y[k], f"{where}[{k}]")
            else:
                for i in np.flatnonzero(mask):
                    assert_same(x[k][i], y[k][i], f"{where}[{k}][{i}]")
        return
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype, f"{where}: {x.shape} {x.dtype} != {y.shape} {y.dtype}"
    if x.dtype.kind == "f":  # the learned reward model's batched matmul rounds differently at another batch size
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=where)
    else:
        np.testing.assert_array_equal(x, y, err_msg=where)


def ends_often(ctx):  # terminates about half the slots each step, from the dreamt tokens alone
    return ctx.tokens[:, 0] % 2 == 0


@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
def test_equal_to_local_env_in_every_autoreset_mode(local_ray, tiny, mode):
    """Same seed and actions: the same observations, rewards, terminations and infos as a local env with that N."""
    # The default model (its prompts, its learned reward) once; the tiny one, sent to the actors, for the rest.
    model = "default" if mode == "next_step" else tiny
    N = 3 if mode == "next_step" else 5  # split 2 + 1, 3 + 2: shards of unequal size
    kw = dict(autoreset_mode=mode, max_episode_steps=3, termination_fn=ends_often)
    remote = RayVectorEnv(N, model, num_actors=2, **SMALL, **kw)
    local = WHAMVectorEnv(N, model, **kw)
    try:
        assert remote.single_observation_space == local.single_observation_space
        assert remote.metadata["autoreset_mode"] == local.metadata["autoreset_mode"]
        assert_same(remote.reset(seed=7), local.reset(seed=7))
        rng = np.random.default_rng(0)
        for t in range(3 if mode == "next_step" else 4):  # resets happen from the second step on
            a = actions_for(rng, N)
            got, want = remote.step(a), local.step(a)
            assert_same(got, want, f"step {t}")
            if mode == "disabled" and (got[2] | got[3]).any():  # reset the finished ones, as a user would
                mask = got[2] | got[3]
                assert_same(remote.reset(options={"reset_mask": mask}), local.reset(options={"reset_mask": mask}))
        if mode == "same_step":  # SB3's adapter over the same two envs
            from wham_gym.sb3 import WHAMVecEnv

            s_remote, s_local = WHAMVecEnv(env=remote), WHAMVecEnv(env=local)
            s_remote.seed(3), s_local.seed(3)
            np.testing.assert_array_equal(s_remote.reset(), s_local.reset())
            for _ in range(3):
                a = actions_for(rng, N)
                (o1, r1, d1, i1), (o2, r2, d2, i2) = s_remote.step(a), s_local.step(a)
                np.testing.assert_array_equal(o1, o2)
                np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(d1, d2)
                for x, y in zip(i1, i2):
                    assert set(x) == set(y)
                    if "terminal_observation" in x:
                        np.testing.assert_array_equal(x["terminal_observation"], y["terminal_observation"])
            assert len(s_remote.get_images()) == N
            from stable_baselines3 import PPO  # and an agent trains over it, unchanged

            PPO("CnnPolicy", s_remote, n_steps=2, batch_size=5, n_epochs=1, device="cpu").learn(2 * N)
    finally:
        remote.close()
        local.close()


def test_reset_options_tokens_mode_and_render(local_ray, tiny):
    """A built model sent to the actors, tokens observations, per-slot prompts, masked resets, render."""
    N = 4
    kw = dict(obs_mode="both", render_mode="rgb_array", autoreset_mode="disabled")
    remote = RayVectorEnv(N, tiny, num_actors=2, **SMALL, **kw)
    local = WHAMVectorEnv(N, tiny, **kw)
    try:
        assert_same(remote.reset(seed=1), local.reset(seed=1))
        rng = np.random.default_rng(1)
        frames = rng.integers(0, 256, (2, 3, 180, 300, 3), dtype=np.uint8)  # one prompt per slot reset
        actions = np.zeros((2, 2, 16), np.float32)
        mask = np.array([False, True, True, False])  # one slot on each actor
        opts = {"reset_mask": mask, "prompt": (frames, actions)}
        assert_same(remote.reset(options=opts), local.reset(options=opts))
        a = actions_for(rng, N)
        assert_same(remote.step(a), local.step(a))
        np.testing.assert_array_equal(np.stack(remote.render()), np.stack(local.render()))
        with pytest.raises(ValueError, match="reset_mask"):
            remote.reset(options={"reset_mask": np.zeros(N, bool)})
        with pytest.raises(ValueError, match=r"expected shape \(4, 16\)"):
            remote.step(np.zeros((3, 16)))
        with pytest.raises(ValueError, match="prompt"):  # raised by the actors' envs, as the local env's
            remote.reset(options={"prompt": "not a prompt"})
    finally:
        remote.close()
        local.close()


def replay_for(slots):  # a per-slot source, built on each actor for the slots it holds
    from wham_gym.reinjection import Reinjection, ReplaySource, Schedule

    rng = np.random.default_rng(0)  # the same recordings on every actor: slot k replays window k
    frames = rng.integers(0, 256, (4, 12, 180, 300, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (4, 12, 16)).astype(np.float32)
    return Reinjection(ReplaySource.from_windows(frames[slots], actions[slots], start=3), Schedule(every=1))


def test_reinjection_runs_on_the_actors(local_ray, tiny):
    """A source that serves any slot goes to the actors as it is (equal to local); per-slot ones by a factory."""
    from wham_gym.reinjection import Reinjection, RetrievalSource, Schedule

    N = 4
    bank = np.random.default_rng(2).integers(0, 256, (6, 180, 300, 3), dtype=np.uint8)
    kw = dict(reinjection=Reinjection(RetrievalSource(tiny, bank), Schedule(every=2)))
    remote = RayVectorEnv(N, tiny, num_actors=2, **SMALL, **kw)
    local = WHAMVectorEnv(N, tiny, **kw)
    try:
        assert_same(remote.reset(seed=4), local.reset(seed=4))
        rng = np.random.default_rng(4)
        for _ in range(2):
            a = actions_for(rng, N)
            got = remote.step(a)
            assert_same(got, local.step(a))
        assert got[4]["reinjected"].all()  # step 2: every slot due
    finally:
        remote.close()
        local.close()
    with pytest.raises(ValueError, match="callable slots -> Reinjection"):
        RayVectorEnv(N, tiny, reinjection=replay_for(np.arange(N)))
    replayed = RayVectorEnv(N, tiny, num_actors=2, reinjection=replay_for, **SMALL)
    try:
        replayed.reset(seed=0)  # a replay has at least one frame after its prompt: the first step reinjects it
        *_, info = replayed.step(np.zeros((N, 16), np.float32))
        assert info["reinjected"].all()
    finally:
        replayed.close()


def lockstep_for(slots):  # live games on the actor, one per slot it holds
    from functools import partial

    import gymnasium as gym

    from wham_gym.reinjection import LockstepSource, Reinjection, Schedule

    make = partial(gym.make, "wham_gym:wham_gym/Doom-v0", scenario="defend_the_center", max_steps=3)
    return Reinjection(LockstepSource([make] * len(slots), asynchronous=False), Schedule(every=1))


def test_lockstep_games_end_dreams_under_same_step(local_ray, tiny):
    """Live games on the actors: a game's end ends its dream, reset in the second round with the game's new frame."""
    pytest.importorskip("vizdoom")
    N = 2
    env = RayVectorEnv(N, tiny, num_actors=2, autoreset_mode="same_step", reinjection=lockstep_for, **SMALL)
    try:
        env.reset(seed=0)
        ended = False
        for _ in range(4):  # the games truncate after 3 steps
            obs, reward, terminated, truncated, info = env.step(np.zeros((N, 16), np.float32))
            if truncated.any():
                ended = True
                assert info["_final_obs"][truncated].all() and info["step"][truncated].tolist() == [0] * truncated.sum()
        assert ended and obs.shape == (N, 180, 300, 3)
    finally:
        env.close()


def test_killed_actor_restarts_its_slots_truncated(local_ray, tiny):
    """An actor killed mid-rollout: its slots start new episodes, truncated and flagged; the others go on."""
    N = 4
    for mode in ("next_step", "same_step"):
        env = RayVectorEnv(N, tiny, num_actors=2, autoreset_mode=mode, timeout_s=120, **SMALL)
        try:
            env.reset(seed=0)
            rng = np.random.default_rng(0)
            env.step(actions_for(rng, N))
            ray.kill(env._actors[1], no_restart=True)  # slots 2 and 3
            with pytest.warns(RuntimeWarning, match="actor 1 .* restarting"):
                obs, reward, terminated, truncated, info = env.step(actions_for(rng, N))
            np.testing.assert_array_equal(truncated, [False, False, True, True])
            np.testing.assert_array_equal(info["_restarted"], [False, False, True, True])
            assert not terminated.any() and (reward[2:] == 0).all()
            if mode == "same_step":
                assert info["final_obs"][2].shape == (180, 300, 3) and info["final_obs"][0] is None
            assert env.restarts == [0, 1]
            for _ in range(2):  # it keeps going; NEXT_STEP resets the truncated slots at the next step
                obs, reward, terminated, truncated, info = env.step(actions_for(rng, N))
                assert "restarted" not in info and obs.shape == (N, 180, 300, 3)
            if mode == "same_step":  # the other policy: a clear error instead
                env.on_failure = "raise"
                ray.kill(env._actors[0], no_restart=True)
                with pytest.raises(ActorFailure, match=r"actor 0 \(slots 0-1\) failed during step: .*on_failure"):
                    env.step(actions_for(rng, N))
                with pytest.raises(ActorFailure, match="lost to an earlier failure"):
                    env.reset()
        finally:
            env.close()


def test_hung_actor_times_out_and_restarts(local_ray, tiny):
    """An actor that stops answering (SIGSTOP) costs one timeout, never a hang."""
    N = 2
    env = RayVectorEnv(N, tiny, num_actors=2, timeout_s=5, **SMALL)
    pid = env.actors_info[0]["pid"]
    try:
        env.reset(seed=0)
        os.kill(pid, signal.SIGSTOP)
        with pytest.warns(RuntimeWarning, match=r"actor 0 .*no answer within 5 s"):
            *_, truncated, info = env.step(np.zeros((N, 16), np.float32))
        np.testing.assert_array_equal(truncated, [True, False])
        env.step(np.zeros((N, 16), np.float32))
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # the stopped worker: ours, by its id
        except ProcessLookupError:
            pass
        env.close()


def test_bad_arguments_are_explained(local_ray, tiny):
    from wham_gym.engine import DreamEngine

    with pytest.raises(ValueError, match="lives in this process"):
        RayVectorEnv(2, DreamEngine(tiny, 2))
    with pytest.raises(ValueError, match="num_actors must be an int in \\[1, num_envs=2\\]"):
        RayVectorEnv(2, tiny, num_actors=3)
    with pytest.raises(ValueError, match="on_failure"):
        RayVectorEnv(2, tiny, on_failure="ignore")


def test_make_vec_builds_it(local_ray):
    import gymnasium as gym

    import wham_gym  # noqa: F401  (registers wham_gym/WHAM-Ray-v0)

    envs = gym.make_vec("wham_gym/WHAM-Ray-v0", num_envs=2, model="tiny", num_actors=2, **SMALL)
    try:
        assert isinstance(envs.unwrapped, RayVectorEnv)
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 180, 300, 3) and obs.dtype == np.uint8
        assert torch.get_num_threads() >= 1
    finally:
        envs.close()


def test_record_cli_on_ray_writes_the_local_bytes(local_ray, tmp_path, capsys):
    from wham_gym.commands.main import main

    args = ["record", "--scenario", "take_cover", "--policy", "strafe", "--episodes", "2", "--max-steps", "5",
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "here")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray"]) == 0  # this process's Ray
    here, there = sorted((tmp_path / "here").glob("*.npz")), sorted((tmp_path / "ray").glob("*.npz"))
    assert len(here) == len(there) == 2
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(here, there))
