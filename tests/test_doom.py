"""DoomEnv and the exploration policy, against the real game."""

import math
import os

import numpy as np
import pytest

from wham_gym import controller
from wham_gym.games.explore import BouncePolicy, ExplorePolicy, PacePolicy, RandomPolicy, StrafePolicy, make_policy

vizdoom = pytest.importorskip("vizdoom")

from wham_gym.games.doom import CONTROLLER_MAPPING, DoomEnv, game_action  # noqa: E402

pytestmark = pytest.mark.doom


@pytest.fixture(scope="module")
def env():
    env = DoomEnv(max_steps=400)
    yield env
    env.close()


def neutral():
    return np.array([0.0] * 12 + [0.0] * 4, dtype=np.float32)


def stick(name, value):
    a = neutral()
    a[controller.index_of(name)] = value
    return a


def test_env_checker_passes():
    from gymnasium.utils.env_checker import check_env

    env = DoomEnv(max_steps=50, render_mode="rgb_array")
    try:
        check_env(env, skip_render_check=False)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (180, 300, 3) and obs.dtype == np.uint8
        assert np.array_equal(env.render(), obs)
    finally:
        env.close()


def test_game_runs_in_a_temp_dir_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = DoomEnv(max_steps=5)
    env.reset(seed=1)
    env.step(neutral())
    workdir = env._workdir
    assert os.path.isdir(workdir)
    env.close()
    env.close()  # idempotent
    assert not os.path.exists(workdir)
    assert os.listdir(tmp_path) == []  # no _vizdoom/ or _vizdoom.ini in the user's folder


def _move(env, action, seed=1, steps=3):  # seed 1 spawns with room on all sides
    """Reset, wait out the spawn freeze (the player ignores input for ~8 tics), hold ``action``."""
    _, info = env.reset(seed=seed)
    for _ in range(3):
        _, _, _, _, info = env.step(neutral())
    before = info
    for _ in range(steps):
        _, _, _, _, info = env.step(action)
    theta = math.radians(before["angle"])
    dx, dy = info["position_x"] - before["position_x"], info["position_y"] - before["position_y"]
    forward = dx * math.cos(theta) + dy * math.sin(theta)
    left = -dx * math.sin(theta) + dy * math.cos(theta)
    turn = (info["angle"] - before["angle"] + 180) % 360 - 180  # counter-clockwise degrees
    return forward, left, turn, info["pitch"] - before["pitch"]


def test_left_stick_y_up_moves_forward(env):
    forward, left, turn, _ = _move(env, stick("left_stick_y", -1.0))
    assert forward == pytest.approx(65.7, abs=1) and abs(left) < 0.5 and turn == pytest.approx(0, abs=0.1)
    forward, left, _, _ = _move(env, stick("left_stick_y", 1.0))
    assert forward == pytest.approx(-65.7, abs=1) and abs(left) < 0.5
    half, _, _, _ = _move(env, stick("left_stick_y", -0.5))  # bin middle 0.625: slower
    assert 20 < half < 60


def test_left_stick_x_strafes(env):
    forward, left, _, _ = _move(env, stick("left_stick_x", 1.0))
    assert left == pytest.approx(-65.7, abs=1) and abs(forward) < 0.5  # +1 strafes right
    forward, left, _, _ = _move(env, stick("left_stick_x", -1.0))
    assert left == pytest.approx(65.7, abs=1) and abs(forward) < 0.5


def test_right_stick_x_turns_8_degrees_per_tic(env):
    forward, left, turn, _ = _move(env, stick("right_stick_x", 1.0), steps=2)
    assert turn == pytest.approx(-8 * 7, abs=0.5)  # right turn = ANGLE decreases; 2 steps = 4+3 tics
    assert abs(forward) < 1 and abs(left) < 1
    _, _, turn, _ = _move(env, stick("right_stick_x", -1.0), steps=2)
    assert turn == pytest.approx(8 * 7, abs=0.5)
    _, _, turn, _ = _move(env, stick("right_stick_x", 0.1), steps=2)  # bin middle 0.15 -> 1.2 deg/tic
    assert turn == pytest.approx(-1.2 * 7, abs=0.5)


def test_right_stick_y_up_looks_up(env):
    *_, pitch = _move(env, stick("right_stick_y", -0.375), steps=1)
    # step 4 of the episode lasts 3 tics (4/3 alternation); up = PITCH decreases at 4 deg/tic
    assert pitch == pytest.approx(-0.375 * 4 * 3, abs=0.1)
    *_, pitch = _move(env, stick("right_stick_y", 0.375), steps=1)
    assert pitch == pytest.approx(0.375 * 4 * 3, abs=0.1)


def test_sticks_are_quantized_to_wham_bins():
    assert game_action(stick("right_stick_x", 0.1)) == game_action(stick("right_stick_x", 0.2))
    assert game_action(stick("right_stick_x", 0.04))[14] == 0.0  # inside the dead bin
    assert game_action(stick("left_stick_y", -1.0))[13] == 50.0
    assert len(CONTROLLER_MAPPING) == 16
    assert [row[0] for row in CONTROLLER_MAPPING] == list(range(16))


def test_same_seed_and_actions_give_identical_frames_across_instances():
    a, b = DoomEnv(max_steps=200), DoomEnv(max_steps=200, info_buffers=("depth", "labels"))
    try:
        space = controller.action_space(seed=7)
        oa, ia = a.reset(seed=11)
        ob, ib = b.reset(seed=11)
        assert np.array_equal(oa, ob) and ia["episode_seed"] == ib["episode_seed"]
        for _ in range(60):
            act = space.sample()
            ra, rb = a.step(act), b.step(act)
            assert np.array_equal(ra[0], rb[0])
            assert ra[1:4] == rb[1:4]
            assert all(ra[4][k] == rb[4][k] for k in ra[4])
            if ra[2] or ra[3]:
                break
        # a different seed gives a different game
        oc, _ = a.reset(seed=12)
        ob, _ = b.reset(seed=11)
        assert not np.array_equal(oc, ob)
    finally:
        a.close()
        b.close()


def test_death_terminates_with_a_real_frame(env):
    obs, info = env.reset(seed=0)
    policy = RandomPolicy(seed=0)
    for _ in range(400):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            break
    assert terminated and not truncated, "random play in deathmatch should die within 400 steps"
    assert info["dead"] == 1.0 and info["health"] <= 0
    assert obs.mean() > 10  # not vizdoom's all-black terminal frame
    with pytest.raises(RuntimeError, match="reset"):
        env.step(neutral())


def test_timeout_truncates():
    env = DoomEnv(max_steps=4)
    try:
        env.reset(seed=0)
        flags = [env.step(neutral())[2:4] for _ in range(4)]
        assert flags == [(False, False)] * 3 + [(False, True)]
    finally:
        env.close()


def test_info_has_game_variables(env):
    _, info = env.reset(seed=0)
    for key in ("position_x", "position_y", "position_z", "angle", "health", "ammo", "kills"):
        assert isinstance(info[key], float)
    assert info["health"] == 100.0


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown Doom scenario"):
        DoomEnv(scenario="no_such_map")
    with pytest.raises(ValueError, match="reward_shaping"):
        DoomEnv(reward_shaping={"kills": 1.0})
    with pytest.raises(ValueError, match="info_buffers"):
        DoomEnv(info_buffers=("automap",))


def test_reward_shaping_adds_living_reward():
    env = DoomEnv(max_steps=10, reward_shaping={"living": 0.5})
    try:
        env.reset(seed=0)
        _, reward, *_ = env.step(neutral())
        assert reward == pytest.approx(0.5 * 4)  # per tic, 4 tics in the first step
    finally:
        env.close()


def test_explore_policy_is_seeded_persistent_and_needs_no_game():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (50, 180, 300, 3), dtype=np.uint8)
    runs = []
    for _ in range(2):
        policy = ExplorePolicy(seed=5)
        runs.append(np.stack([policy.act(f) for f in frames]))  # obs only, no info
    assert np.array_equal(runs[0], runs[1])
    acts = runs[0]
    assert acts.dtype == np.float32 and acts.shape == (50, 16)
    assert controller.action_space().contains(acts[0])
    # sticks vary smoothly: steps are much smaller than uniform noise's (~0.67 mean |diff|)
    assert np.abs(np.diff(acts[:, 12:], axis=0)).mean() < 0.3
    policy.reset(seed=6)
    assert not np.array_equal(np.stack([policy.act(f) for f in frames]), acts)


def test_explore_policy_turns_toward_visible_enemy():
    policy = ExplorePolicy(seed=0, sigma=0.0)
    obs = np.zeros((180, 300, 3), np.uint8)
    info = {"labels": [{"name": "DoomImp", "x": 260, "y": 60, "width": 20, "height": 40}]}
    turns = [policy.act(obs, info)[controller.index_of("right_stick_x")] for _ in range(5)]
    assert turns[-1] > 0.3  # enemy on the right -> turn right
    info = {"labels": [{"name": "DoomImp", "x": 145, "y": 60, "width": 10, "height": 40}]}
    assert policy.act(obs, info)[0] == 1.0  # in the sights -> fire


def test_jitter_and_sweep_are_the_strafe_presets_held_for_other_lengths():
    from wham_gym.commands.games import RECORD_POLICIES
    from wham_gym.games.explore import POLICIES

    assert set(RECORD_POLICIES) == set(POLICIES)  # the CLI offers every policy, without importing game code
    means = {}
    for name in ("jitter", "strafe", "sweep"):
        policy = make_policy(name, seed=2)
        x = np.stack([policy.act(None) for _ in range(3000)])[:, controller.index_of("left_stick_x")]
        assert set(np.unique(x)) == {-1.0, 0.0, 1.0}
        # a draw of the same preset (1 in 3) hides a switch, so runs average 1.5 x the mean hold
        means[name] = len(x) / (1 + np.count_nonzero(np.diff(x)))
    assert 1.3 < means["jitter"] < 1.7  # a new draw every step: runs of 1.5
    assert 3.5 < means["strafe"] < 5.5  # 4.5
    assert 11 < means["sweep"] < 25  # 18


def test_pace_goes_back_and_forth_in_legs_of_the_given_lengths():
    policy = make_policy("pace", seed=4)
    x = np.stack([policy.act(None) for _ in range(2000)])[:, controller.index_of("left_stick_x")]
    assert set(np.unique(x)) == {-1.0, 1.0}  # never still
    changes = np.flatnonzero(np.diff(x)) + 1
    legs = np.diff(changes)  # whole legs (the first, a half leg, and the last, cut, left out)
    assert legs.min() >= 8 and legs.max() <= 40 and 20 < legs.mean() < 28  # uniform in [8, 40]: mean 24
    assert 4 <= changes[0] <= 20  # the first leg is half of one
    assert (x[changes] == -x[changes - 1]).all()  # each leg turns back
    again = make_policy("pace", seed=4)
    replay = np.stack([again.act(None) for _ in range(50)])[:, controller.index_of("left_stick_x")]
    assert np.array_equal(x[:50], replay)  # the seed decides the legs
    with pytest.raises(ValueError, match="min_leg"):
        PacePolicy(min_leg=10, max_leg=5)


def _corridor(policy, steps):
    """Drive ``policy`` in a corridor like take_cover's room (y 16-752, ~28 units a step at full strafe)."""
    y, xs, ys = 384.0, [], []
    for _ in range(steps):
        x = policy.act(None, {"position_x": 0.0, "position_y": y})[controller.index_of("left_stick_x")]
        y = float(np.clip(y + 28 * x, 16, 752))
        xs.append(x), ys.append(y)
    return np.array(xs), np.array(ys)


def test_bounce_turns_back_at_each_wall_and_sometimes_in_the_middle():
    """Bounce reverses a step after the wall stops it plus its dwell, and now and then mid-room; without the
    game's position it says what it needs."""
    xs, ys = _corridor(make_policy("bounce", seed=5), 3000)
    assert set(np.unique(xs)) == {-1.0, 1.0}  # never still
    turns = np.flatnonzero(np.diff(xs)) + 1
    at_wall = np.isin(ys[turns - 1], (16.0, 752.0))
    assert at_wall.mean() > 0.5 and (~at_wall).sum() > 10  # mostly at the walls, some mid-room (chance 1/30)
    pressed = [next(k for k in range(1, t + 1) if ys[t - k] != ys[t - 1]) - 1 for t in turns[at_wall]]
    assert max(pressed) <= 1 + 1 + 2 and min(pressed) >= 2  # reached, seen stuck a step later, dwelt 0-2 steps
    assert np.array_equal(_corridor(make_policy("bounce", seed=5), 300)[0], xs[:300])  # the seed decides
    with pytest.raises(ValueError, match="position"):
        make_policy("bounce", seed=0).act(None, {})
    with pytest.raises(ValueError, match="max_dwell"):
        BouncePolicy(max_dwell=-1)


def test_strafe_policy_holds_left_still_right_and_moves_the_player():
    policy = make_policy("strafe", seed=1)
    acts = np.stack([policy.act(None) for _ in range(600)])
    x = acts[:, controller.index_of("left_stick_x")]
    assert set(np.unique(x)) == {-1.0, 0.0, 1.0}  # take_cover's presets: left, still, right
    others = np.delete(acts, controller.index_of("left_stick_x"), axis=1)
    assert not others.any()  # nothing else pressed or moved
    runs = np.diff(np.flatnonzero(np.diff(x) != 0))  # run lengths between changes
    assert 1.8 < runs.mean() < 5  # held for a while (a change to the same value hides some switches)
    policy.reset(seed=1)
    assert np.array_equal(np.stack([policy.act(None) for _ in range(600)]), acts)  # seeded
    env = DoomEnv("take_cover", max_steps=40)
    try:
        _, info = env.reset(seed=0)
        policy = StrafePolicy(seed=0)
        policy.direction, policy.left = 1.0, 10**9  # strafe right for the whole run
        x0 = info["position_y"], info["position_x"]
        for _ in range(10):
            _, _, terminated, _, info = env.step(policy.act(None))
        moved = np.hypot(info["position_y"] - x0[0], info["position_x"] - x0[1])
        assert moved > 50  # ten held steps cross a good part of the room
    finally:
        env.close()
    with pytest.raises(ValueError, match="mean_hold"):
        StrafePolicy(mean_hold=0.5)


def test_explore_policy_explores_the_real_game():
    env = DoomEnv(max_steps=150, info_buffers=("depth", "labels"))
    try:
        obs, info = env.reset(seed=2)
        policy = make_policy("explore", seed=2)
        visited = set()
        for _ in range(150):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            visited.add((int(info["position_x"] // 64), int(info["position_y"] // 64)))
            if terminated or truncated:
                break
        assert len(visited) >= 10  # it walks around instead of jittering in place
    finally:
        env.close()


def test_cli_help_and_record(tmp_path, capsys):
    from wham_gym.commands.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "record" in capsys.readouterr().out
    out = tmp_path / "rec"
    assert main(["record", "--episodes", "1", "--max-steps", "8", "--out", str(out), "--no-progress", "--policy", "random"]) == 0
    assert sorted(os.listdir(out)) == ["episode_000000.npz", "manifest.json"]


def test_reset_after_play_renders_like_a_fresh_game():
    # The renderer keeps weapon-bob state across episodes; reset must clear its effect.
    run = stick("left_stick_y", -1.0)
    run[controller.index_of("right_stick_x")] = 0.4
    used, fresh = DoomEnv(max_steps=100), DoomEnv(max_steps=100)
    try:
        used.reset(seed=0)
        attack = run.copy()
        attack[0] = 1.0
        for t in range(30):
            used.step(attack if t % 2 else run)
        (a, ia), (b, ib) = used.reset(seed=5), fresh.reset(seed=5)
        for t in range(12):
            assert np.array_equal(a, b), t
            assert ia == ib, t
            (a, _, _, _, ia), (b, _, _, _, ib) = used.step(run), fresh.step(run)
    finally:
        used.close()
        fresh.close()


def _game_pids(workdir: str) -> list[int]:
    """vizdoom processes whose command line names this env's config folder."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if workdir.encode() in f.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_sigterm_closes_the_game():
    """A Python killed by SIGTERM (pkill, schedulers) takes its vizdoom process with it."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import time, gymnasium as gym, wham_gym\n"
            "env = gym.make('wham_gym/Doom-v0', scenario='basic').unwrapped\n"
            "env.reset(seed=0)\n"
            "print(env._workdir, flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        workdir = proc.stdout.readline().strip()
        assert workdir and _game_pids(workdir), "the game process was not found"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.time() + 10
        while _game_pids(workdir) and time.time() < deadline:
            time.sleep(0.1)
        assert not _game_pids(workdir) and not os.path.exists(workdir)
    finally:
        proc.kill()
