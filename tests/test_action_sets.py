"""Action sets: presets and axes over the controller, the same in the dream and in the game.

The game-behaviour checks drive the real ViZDoom scenario of every built-in set and hold
each preset to its name (``left`` strafes left, ``fire`` spends ammo, ...); the SB3 runs
train PPO a few steps over Discrete presets in both worlds.
"""

import importlib.util
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import wham_gym  # noqa: F401  (registers wham_gym/Doom-v0)
from wham_gym import controller
from wham_gym.action_sets import (BUILTIN_ACTION_SETS, ActionSet, AxesActions, AxesVectorActions, DiscreteActions,
                                  DiscreteVectorActions, Preset, action_set_for)
from wham_gym.env import WHAMEnv, WHAMVectorEnv

HAS_DOOM = importlib.util.find_spec("vizdoom") is not None
HAS_SB3 = importlib.util.find_spec("stable_baselines3") is not None
needs_sb3 = pytest.mark.skipif(not HAS_SB3, reason="needs stable-baselines3")
needs_doom = pytest.mark.skipif(not HAS_DOOM, reason="needs vizdoom")
DEFAULT_CARD = Path(wham_gym.__file__).parent / "assets" / "default" / "card.json"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def vec(**values):
    a = np.zeros(16, np.float32)
    for name, v in values.items():
        a[controller.index_of(name)] = v
    return a


class Recorder(gym.Wrapper):
    """Keeps the controller vectors that reach the env below it."""

    def __init__(self, env, log):
        super().__init__(env)
        self.log = log

    def step(self, action):
        self.log.append(np.array(action, np.float32))
        return self.env.step(action)


def recording_reward(log):
    """A dream reward_fn that keeps the controller vectors the engine stepped with (reward 0)."""

    def fn(ctx):
        log.append(ctx.actions.numpy(force=True).copy())
        return torch.zeros(ctx.num_envs)

    fn.needs_frames = False
    return fn


# ---------------------------------------------------------------------------- the sets themselves

def test_builtin_presets_are_exact_controller_vectors():
    tc, dtc = BUILTIN_ACTION_SETS["take_cover"], BUILTIN_ACTION_SETS["defend_the_center"]
    assert tc.names == ("none", "left", "right")
    np.testing.assert_array_equal(tc.vectors, [vec(), vec(left_stick_x=-1), vec(left_stick_x=1)])
    assert dtc.names == ("turn_left", "turn_right", "fire")
    np.testing.assert_array_equal(dtc.vectors, [vec(right_stick_x=-0.625), vec(right_stick_x=0.625), vec(button_0=1)])
    for s in BUILTIN_ACTION_SETS.values():
        assert s.vectors.shape == (len(s), 16) and s.vectors.dtype == np.float32 and not s.vectors.flags.writeable
        # What WHAM sees is exactly the preset, under both button rules.
        np.testing.assert_array_equal(controller.quantize(s.vectors), s.vectors)
        np.testing.assert_array_equal(controller.quantize(s.vectors, buttons="wham"), s.vectors)
        assert len(set(map(bytes, s.vectors))) == len(s), f"{s.name}: two presets are the same vector"
        assert s.discrete_space() == spaces.Discrete(len(s))
        box = s.axes_space()
        assert box.shape == (len(s.axes),) and box.dtype == np.float32
        for name, lo, hi in s.axes:
            i = controller.index_of(name)
            assert controller.ACTION_LOW[i] <= lo < hi <= controller.ACTION_HIGH[i]
        assert ActionSet.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # survives a card


def test_to_controller_batched_numpy_torch_and_errors():
    s = BUILTIN_ACTION_SETS["defend_the_center"]
    np.testing.assert_array_equal(s.to_controller(np.array([[2, 0], [1, 1]])),
                                  [[vec(button_0=1), vec(right_stick_x=-0.625)], [vec(right_stick_x=0.625)] * 2])
    np.testing.assert_array_equal(s.to_controller(2), vec(button_0=1))
    t = s.to_controller(torch.tensor([1, 2]))
    assert torch.is_tensor(t) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), s.vectors[[1, 2]])
    assert s.vector("fire")[0] == 1 and s.index("turn_right") == 1
    for bad in (3, -1, np.array([0, 5]), torch.tensor([3])):
        with pytest.raises(ValueError, match="0..2"):
            s.to_controller(bad)
    for bad in (1.0, np.array([0.5]), torch.tensor([1.0])):
        with pytest.raises(ValueError, match="integers"):
            s.to_controller(bad)
    with pytest.raises(ValueError, match="no preset 'jump'.*turn_left, turn_right, fire"):
        s.index("jump")
    # Axes: clipped into their ranges, the other dimensions 0.
    out = s.axes_to_controller(np.array([[0.3, 0.9], [-4.0, -1.0]]))
    np.testing.assert_array_equal(out, [vec(right_stick_x=0.3, button_0=0.9), vec(right_stick_x=-1.0)])
    np.testing.assert_array_equal(s.axes_to_controller(torch.tensor([0.3, 0.9])).numpy(), out[0])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        s.axes_to_controller(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        s.axes_to_controller(np.array([np.nan, 0.0]))


def test_axis_levels_snap_to_the_values_the_world_model_saw():
    # take_cover's recordings hold the stick at -1, 0 or +1: SAC's Box snaps to them (nearest; ties to the lower).
    s = BUILTIN_ACTION_SETS["take_cover"]
    assert s.levels == (("left_stick_x", (-1.0, 0.0, 1.0)),)
    x = np.array([[-3.0], [-0.6], [-0.5], [-0.2], [0.49], [0.51], [0.9]], np.float32)
    want = [-1, -1, -1, 0, 0, 1, 1]
    np.testing.assert_array_equal(s.axes_to_controller(x)[:, controller.index_of("left_stick_x")], want)
    t = s.axes_to_controller(torch.from_numpy(x))
    np.testing.assert_array_equal(t[:, controller.index_of("left_stick_x")].numpy(), want)
    assert not np.delete(s.axes_to_controller(x), controller.index_of("left_stick_x"), axis=1).any()
    # Levels on one axis leave another continuous; they survive a card and a pickle (SubprocVecEnv).
    a = ActionSet("walk", {"stand": {}}, axes=["left_stick_y", "right_stick_x"],
                  levels={"right_stick_x": [0.625, -0.625, 0.0]})
    np.testing.assert_array_equal(a.axes_to_controller(np.array([0.3, 0.4])), vec(left_stick_y=0.3, right_stick_x=0.625))
    assert ActionSet.from_dict(json.loads(json.dumps(a.to_dict()))) == a == pickle.loads(pickle.dumps(a))
    assert hash(a) == hash(pickle.loads(pickle.dumps(a)))
    for levels, match in [({"left_stick_x": [0, 1]}, "not one of the set's axes"),
                          ({"right_stick_x": [0.3, 0.0]}, "not one of WHAM's stick bin middles"),
                          ({"right_stick_x": [1.0]}, "two or more distinct values"),
                          ({"right_stick_x": 1.0}, "a sequence of numbers"),
                          (["right_stick_x"], "levels must be")]:
        with pytest.raises(ValueError, match=match):
            ActionSet("walk", {"stand": {}}, axes=["left_stick_y", "right_stick_x"], levels=levels)


def test_generic_constructor_and_its_errors():
    a = ActionSet("walk", [("stand", {}), ("forward", {"left_stick_y": -1, "button_4": 1}),
                           ("back", {"left_stick_y": 1})], axes=["left_stick_y", ("right_stick_x", -0.5, 0.5)])
    assert a.names == ("stand", "forward", "back") and a.axis_names == ("left_stick_y", "right_stick_x")
    np.testing.assert_array_equal(a.vector(1), vec(left_stick_y=-1, button_4=1))
    assert a.axes_space() == spaces.Box(np.float32([-1, -0.5]), np.float32([1, 0.5]), dtype=np.float32)
    # The same set from a mapping, or from Preset objects, is equal.
    assert ActionSet("walk", {"stand": {}, "forward": {"left_stick_y": -1, "button_4": 1}, "back": {"left_stick_y": 1}},
                     axes={"left_stick_y": (-1, 1), "right_stick_x": (-0.5, 0.5)}) == a
    assert ActionSet("walk", list(a.presets), axes=a.axes) == a
    assert isinstance(a.presets[0], Preset)
    # Every stick bin middle is accepted.
    ActionSet("bins", {f"b{k}": {"right_stick_y": float(m)} for k, m in enumerate(controller.STICK_BIN_MIDDLES)})

    cases = [
        ({"x": {"left_stick_z": 1}}, "unknown controller dimension 'left_stick_z'.*right_stick_y"),
        ({"x": {"left_stick_x": 1.5}}, r"left_stick_x=1.5 is out of range \[-1, 1\]"),
        ({"x": {"button_0": -1}}, r"button_0=-1 is out of range \[0, 1\]"),
        ({"x": {"button_0": float("nan")}}, "out of range"),
        ({"x": {"button_0": 0.7}}, "a button preset is 0 .* or 1"),
        ({"x": {"right_stick_x": 0.5}}, "not one of WHAM's stick bin middles; .* would both see 0.625"),
        ({"x": {"right_stick_x": -0.5}}, "would both see -0.375"),
        ({"x": {"button_0": "yes"}}, "must be a number"),
        ({}, "at least one preset"),
        ([("a", {}), ("a", {})], "named twice"),
        ([("a",)], r"each preset is \(name"),
        ({"": {}}, "non-empty"),
    ]
    for presets, message in cases:
        with pytest.raises(ValueError, match=message):
            ActionSet("bad", presets)
    for axes, message in [(["left_stick_z"], "unknown controller dimension"),
                          ([("left_stick_x", -2, 1)], r"within the controller's \[-1, 1\]"),
                          ([("button_0", -1, 1)], r"within the controller's \[0, 1\]"),
                          ([("left_stick_x", 0.5, 0.5)], "non-empty"),
                          (["left_stick_x", "left_stick_x"], "named twice")]:
        with pytest.raises(ValueError, match=message):
            ActionSet("bad", {"a": {}}, axes=axes)
    with pytest.raises(ValueError, match="exposes no axes"):
        ActionSet("bad", {"a": {}}).axes_space()
    with pytest.raises(ValueError, match="keys name, presets"):
        ActionSet.from_dict({"name": "x", "presets": {}, "buttons": []})


def test_action_set_for_names_cards_models_and_envs(tiny, monkeypatch):
    tc = BUILTIN_ACTION_SETS["take_cover"]
    assert action_set_for("take_cover") is tc and action_set_for(tc) is tc
    with pytest.raises(ValueError, match="unknown action set 'dodge'; known sets: take_cover, defend_the_center"):
        action_set_for("dodge")
    # A card: its action_set (a name, or a set as data), else its scenario's set.
    assert action_set_for({"scenario": "defend_the_center"}).name == "defend_the_center"
    assert action_set_for({"scenario": "/x/take_cover.cfg", "action_set": "basic"}).name == "basic"
    custom = ActionSet("mine", {"jump": {"button_2": 1}})
    assert action_set_for({"action_set": custom.to_dict()}) == custom
    assert action_set_for(json.loads(DEFAULT_CARD.read_text())).name == "defend_the_center"  # the shipped model
    with pytest.raises(ValueError, match="model 'm'.*scenario 'deathmatch'.*known sets: take_cover"):
        action_set_for({"name": "m", "scenario": "deathmatch"})
    with pytest.raises(ValueError, match="names no action set .* and no scenario; known sets: take_cover"):
        action_set_for({"name": "m"})
    with pytest.raises(ValueError, match="unknown action set 'nope'"):
        action_set_for({"action_set": "nope", "scenario": "take_cover"})
    with pytest.raises(TypeError, match="expected an ActionSet"):
        action_set_for(3)
    # A model, and the envs built on it, carry its card.
    with pytest.raises(ValueError, match="model 'tiny'.*no action set"):
        action_set_for(tiny)
    monkeypatch.setitem(tiny.card, "scenario", "take_cover")
    assert action_set_for(tiny) is tc
    env = WHAMEnv(tiny)
    assert action_set_for(env) is tc and action_set_for(env.vector) is tc and action_set_for(env.engine) is tc
    assert DiscreteActions(env).action_set is tc  # derived when not given
    env.close()


def test_wrappers_refuse_envs_without_the_controller():
    with pytest.raises(ValueError, match="16-dim controller Box"):
        DiscreteActions(gym.make("CartPole-v1"), "take_cover")
    pendulums = gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="16-dim controller Box"):
        AxesVectorActions(pendulums, "take_cover")
    pendulums.close()


# ---------------------------------------------------------------------------- both worlds

@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_gymnasium_env_checker_passes_over_the_wrappers(tiny):
    from gymnasium.utils.env_checker import check_env

    check_env(DiscreteActions(WHAMEnv(tiny), "take_cover"), skip_render_check=True)
    check_env(AxesActions(WHAMEnv(tiny), "defend_the_center"), skip_render_check=True)
    if HAS_DOOM:
        check_env(DiscreteActions(gym.make("wham_gym/Doom-v0", scenario="take_cover", max_steps=20).unwrapped),
                  skip_render_check=True)


@pytest.mark.parametrize("set_name", ["take_cover", "defend_the_center"])
@pytest.mark.doom
@needs_doom
def test_both_worlds_same_spaces_and_same_controller_vectors(tiny, set_name):
    game_log, dream_log = [], []
    game = gym.make("wham_gym/Doom-v0", scenario=set_name, max_steps=50)
    game = DiscreteActions(Recorder(game, game_log))  # derived from the game's scenario
    dream = DiscreteActions(WHAMEnv(tiny, reward_fn=recording_reward(dream_log)), set_name)
    s = BUILTIN_ACTION_SETS[set_name]
    assert game.action_set is s and dream.action_set is s
    assert game.action_space == dream.action_space == spaces.Discrete(len(s))
    game.reset(seed=0)
    dream.reset(seed=0)
    for i in [*range(len(s)), np.int64(len(s) - 1), np.array(0)]:
        game.step(i)
        dream.step(i)
    np.testing.assert_array_equal(np.stack(game_log), np.stack(dream_log)[:, 0])
    np.testing.assert_array_equal(np.stack(game_log), s.vectors[[*range(len(s)), len(s) - 1, 0]])
    with pytest.raises(ValueError, match="0..2"):
        game.step(len(s))
    with pytest.raises(ValueError, match="one preset index"):
        dream.step(np.array([0, 1]))

    # Axes: the same Box, the same controller vector.
    game_axes = AxesActions(game.env, set_name)
    dream_axes = AxesActions(dream.env, set_name)
    assert game_axes.action_space == dream_axes.action_space == s.axes_space()
    a = np.linspace(-0.9, 0.9, len(s.axes)).astype(np.float32)
    game_axes.step(a)
    dream_axes.step(a)
    np.testing.assert_array_equal(game_log[-1], dream_log[-1][0])
    expected, levels = np.zeros(16, np.float32), dict(s.levels)
    for (name, lo, hi), v in zip(s.axes, a):
        v = np.clip(v, lo, hi)  # take_cover's stick -0.9 reaches both worlds as -1, a value its data holds
        expected[controller.index_of(name)] = min(levels[name], key=lambda x: abs(x - v)) if name in levels else v
    np.testing.assert_array_equal(game_log[-1], expected)
    game.close()
    dream.close()


def test_vector_wrappers_follow_gymnasium_conventions(tiny):
    log = []
    s = BUILTIN_ACTION_SETS["defend_the_center"]
    venv = DiscreteVectorActions(WHAMVectorEnv(3, tiny, reward_fn=recording_reward(log)), "defend_the_center")
    assert venv.single_action_space == spaces.Discrete(3)
    assert venv.action_space == spaces.MultiDiscrete([3, 3, 3])
    venv.reset(seed=0)
    venv.action_space.seed(0)
    sampled = venv.action_space.sample()
    venv.step(sampled)
    venv.step(np.array([2, 1, 0]))
    venv.step(torch.tensor([0, 0, 2]))
    np.testing.assert_array_equal(np.stack(log), s.vectors[[list(sampled), [2, 1, 0], [0, 0, 2]]])
    for bad, message in [(np.array([0, 1]), r"shape \(3,\)"), (np.array([0, 1, 3]), "0..2")]:
        with pytest.raises(ValueError, match=message):
            venv.step(bad)
    venv.close()

    log.clear()
    axes = AxesVectorActions(WHAMVectorEnv(2, tiny, reward_fn=recording_reward(log)), s)
    assert axes.single_action_space == s.axes_space()
    assert axes.action_space == spaces.Box(np.float32([[-1, 0]] * 2), np.float32([[1, 1]] * 2), dtype=np.float32)
    axes.reset(seed=0)
    axes.step(np.array([[0.25, 1.0], [-2.0, 0.2]], np.float32))
    np.testing.assert_array_equal(log[0], [vec(right_stick_x=0.25, button_0=1), vec(right_stick_x=-1, button_0=0.2)])
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        axes.step(np.zeros((3, 2), np.float32))
    axes.close()


# ---------------------------------------------------------------------------- the real game

# What each preset name promises, measured against standing still from the same start.
MOVE = 40.0  # map units over 4 steps (~14 tics); measured: strafe 113, forward 89-113
TURN = 30.0  # degrees over 4 steps; measured: 70 at 5 deg/tic


def effect(before, after):
    th = math.radians(before["angle"])
    dx, dy = after["position_x"] - before["position_x"], after["position_y"] - before["position_y"]
    return {"forward": dx * math.cos(th) + dy * math.sin(th), "left": -dx * math.sin(th) + dy * math.cos(th),
            "turn": (after["angle"] - before["angle"] + 180) % 360 - 180, "pitch": after["pitch"] - before["pitch"],
            "ammo": after["ammo"]}


PROMISES = {
    "none": lambda e, still: e == still,  # and the same frame (below)
    "left": lambda e, still: e["left"] > MOVE and abs(e["turn"]) < 1e-6,
    "right": lambda e, still: e["left"] < -MOVE and abs(e["turn"]) < 1e-6,
    "forward": lambda e, still: e["forward"] > MOVE and abs(e["turn"]) < 1e-6,
    "turn_left": lambda e, still: e["turn"] > TURN and abs(e["forward"]) + abs(e["left"]) < 1e-6,
    "turn_right": lambda e, still: e["turn"] < -TURN and abs(e["forward"]) + abs(e["left"]) < 1e-6,
    "fire": lambda e, still: e["ammo"] < still["ammo"] and e["turn"] == 0 and e["forward"] == e["left"] == 0,
}


@pytest.mark.parametrize("set_name", sorted(BUILTIN_ACTION_SETS))
@pytest.mark.doom
@needs_doom
def test_presets_do_what_their_names_say_in_the_game(set_name):
    from wham_gym.games.doom import DoomEnv

    s = BUILTIN_ACTION_SETS[set_name]
    unchecked = set(s.names) - set(PROMISES)
    assert not unchecked, f"{set_name}: no game check for presets {sorted(unchecked)}; add them to PROMISES"
    env = DiscreteActions(DoomEnv(set_name, max_steps=50))

    def play(i):  # four steps of preset i (None: the bare controller at rest) from the same start
        _, before = env.reset(seed=0)
        for _ in range(4):
            obs, _, terminated, truncated, info = env.step(i) if i is not None else env.env.step(np.zeros(16))
            assert not (terminated or truncated)
        return obs, effect(before, info)

    still_frame, still = play(None)
    frames = {}
    for i, name in enumerate(s.names):
        frames[name], e = play(i)
        assert PROMISES[name](e, still), f"{set_name}: preset {name!r} did {e} (standing still: {still})"
        assert e["pitch"] == 0, f"{set_name}: preset {name!r} looked up or down"
        assert np.array_equal(frames[name], still_frame) == (name == "none"), f"{set_name}: {name!r}'s frame"
    if "left" in frames and "right" in frames:  # opposite strafes see different things
        assert np.abs(frames["left"].astype(int) - frames["right"]).mean() > 2
    env.close()


# ---------------------------------------------------------------------------- stable-baselines3

@needs_sb3
def test_importing_action_sets_does_not_import_sb3():
    code = "import sys, wham_gym.action_sets; print('stable_baselines3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _ppo(venv):
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[8]))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)
    assert model.num_timesteps >= 32
    assert any(not torch.equal(b, p) for b, p in zip(before, model.policy.parameters()))
    assert model.action_space == spaces.Discrete(3)
    buf = model.rollout_buffer  # the last rollout's picks, flattened env by env for training
    assert buf.generator_ready
    chosen = buf.actions.reshape(venv.num_envs, 16).T.astype(int)  # (n_steps, n_envs)
    assert len(np.unique(chosen)) > 1
    return chosen


@needs_sb3
def test_sb3_ppo_discrete_in_the_dream(tiny, monkeypatch):
    from wham_gym.action_sets_sb3 import VecAxesActions, VecDiscreteActions
    from wham_gym.sb3 import WHAMVecEnv

    log = []
    monkeypatch.setitem(tiny.card, "scenario", "take_cover")
    venv = VecDiscreteActions(WHAMVecEnv(2, tiny, max_episode_steps=12, reward_fn=recording_reward(log)))
    assert venv.action_set is BUILTIN_ACTION_SETS["take_cover"]  # from the model's card
    chosen = _ppo(venv)
    # The controller vectors the engine stepped with are the presets PPO chose.
    np.testing.assert_array_equal(np.stack(log[-16:]), venv.action_set.vectors[chosen])
    with pytest.raises(ValueError, match="2 preset indices"):
        venv.step(np.array([0, 1, 2]))
    axes = VecAxesActions(venv.venv, "take_cover")
    assert axes.action_space == spaces.Box(-1, 1, (1,), np.float32)
    axes.reset()
    log.clear()
    axes.step(np.array([[0.75], [-3.0]], np.float32))  # snapped to the set's levels: its data's -1, 0, +1
    np.testing.assert_array_equal(log[0], [vec(left_stick_x=1), vec(left_stick_x=-1)])
    venv.close()


@needs_sb3
@pytest.mark.doom
@needs_doom
def test_sb3_ppo_discrete_in_the_game():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from wham_gym.action_sets_sb3 import VecDiscreteActions
    from wham_gym.games.doom import DoomEnv

    log = []
    venv = DummyVecEnv([lambda: DiscreteActions(Recorder(DoomEnv("take_cover", max_steps=12), log))])
    assert venv.action_space == spaces.Discrete(3)
    chosen = _ppo(venv)
    assert len(log) == 32  # 2 rollouts of 16 steps
    np.testing.assert_array_equal(np.stack(log[-16:]), BUILTIN_ACTION_SETS["take_cover"].vectors[chosen[:, 0]])
    venv.close()
    # The SB3 wrapper over a plain game VecEnv derives the same set from the scenario.
    plain = VecDiscreteActions(DummyVecEnv([lambda: gym.make("wham_gym/Doom-v0", scenario="take_cover")]))
    assert plain.action_set is BUILTIN_ACTION_SETS["take_cover"] and plain.action_space == spaces.Discrete(3)
    plain.close()
