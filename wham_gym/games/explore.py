"""Data-collection policies for the 16-dim controller.

Uniform random actions are white noise: the player jitters in place and the
frames look nothing like play. ``ExplorePolicy`` behaves more like a person
holding a pad: sticks drift smoothly (Ornstein-Uhlenbeck), gaits and buttons
persist for many steps, and the view turns toward open space or a visible
enemy. It uses the game's depth and labels buffers when ``info`` carries them
(``DoomEnv(info_buffers=("depth", "labels"))``) and otherwise steers from the
frame alone, so it also drives world models that have no game behind them.

All randomness comes from one ``numpy.random.Generator`` seeded in ``reset``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from wham_gym import controller

LX, LY, RX, RY = range(controller.NUM_BUTTONS, controller.ACTION_DIM)

# Doom monster classes (labels buffer names) worth turning toward and shooting.
ENEMIES = frozenset(
    "ZombieMan ShotgunGuy ChaingunGuy DoomImp Demon Spectre LostSoul Cacodemon HellKnight "
    "BaronOfHell Arachnotron PainElemental Revenant Fatso Archvile SpiderMastermind Cyberdemon "
    "WolfensteinSS MarineChainsawVzd".split()
)

# Per button: (chance per step to press when released, mean hold in steps).
# Index order follows wham_gym.games.doom.BUTTON_MAPPING; the policy itself
# only relies on button 0 being "fire" and button 5 being "turn around".
BUTTON_HABITS = (
    (0.04, 6.0),  # 0 attack
    (0.02, 2.0),  # 1 use
    (0.01, 2.0),  # 2 jump
    (0.005, 8.0),  # 3 crouch
    (0.03, 25.0),  # 4 run
    (0.004, 1.0),  # 5 turn 180
    (0.004, 1.0),  # 6 next weapon
    (0.003, 1.0),  # 7 previous weapon
    (0.002, 1.0),  # 8 weapon 1
    (0.003, 1.0),  # 9 weapon 2
    (0.003, 1.0),  # 10 weapon 3
    (0.003, 1.0),  # 11 weapon 4
)
ATTACK, TURN180 = 0, 5

# Gaits: (probability, left stick mean x, left stick mean y); y = -1 walks forward.
GAITS = (
    (0.55, 0.0, -0.85),  # walk forward
    (0.12, 0.6, -0.5),  # forward, drifting right
    (0.12, -0.6, -0.5),  # forward, drifting left
    (0.08, 0.0, 0.6),  # back off
    (0.13, 0.0, 0.0),  # stand and look around
)
MEAN_GAIT_STEPS = 30.0


class ExplorePolicy:
    """Persistent, steering exploration; ``act(obs, info) -> (16,) float32`` controller vector.

    Args:
        seed: seed for the policy's generator (also accepted by ``reset``).
        theta: OU mean reversion per step (higher = sticks follow their target faster).
        sigma: OU noise scale per step.
        steer_gain: how hard the right stick turns toward the chosen direction.
    """

    def __init__(self, seed: int | None = None, theta: float = 0.25, sigma: float = 0.2, steer_gain: float = 1.2):
        self.theta, self.sigma, self.steer_gain = theta, sigma, steer_gain
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.sticks = np.zeros(4)
        self.held = np.zeros(controller.NUM_BUTTONS, dtype=np.int64)  # steps left to hold each button
        self.gait = (0.0, -0.85)
        self.gait_left = 0
        self.prev_small: np.ndarray | None = None
        self.prev_position: tuple[float, float] | None = None
        self.stuck_steps = 0
        self.escape_turn = 0.0

    # -- perception ----------------------------------------------------------

    @staticmethod
    def _openness_from_depth(depth: np.ndarray) -> np.ndarray:
        """Per-column distance in the middle band of the depth buffer (higher = more open)."""
        h = depth.shape[0]
        return depth[h // 3 : 2 * h // 3].astype(np.float32).mean(0)

    @staticmethod
    def _openness_from_frame(obs: np.ndarray) -> np.ndarray:
        """Per-column openness guessed from pixels: Doom darkens with distance, and near walls fill the view evenly."""
        h = obs.shape[0]
        band = obs[h // 3 : 2 * h // 3].astype(np.float32).mean(-1)
        return 255.0 - band.mean(0)

    def _target(self, obs: np.ndarray, info: Mapping[str, Any]) -> tuple[float, float, bool]:
        """(target column in [-1, 1], openness ahead in [0, 1], enemy in sights)."""
        width = obs.shape[1]
        enemies = [lab for lab in info.get("labels", ()) if lab.get("name") in ENEMIES]
        if enemies:
            big = max(enemies, key=lambda lab: lab["width"] * lab["height"])
            centre = big["x"] + big["width"] / 2
            aimed = abs(centre - width / 2) < max(4.0, big["width"] / 2)
            return 2.0 * centre / width - 1.0, 1.0, aimed
        if "depth" in info:
            openness = self._openness_from_depth(np.asarray(info["depth"]))
        else:
            openness = self._openness_from_frame(obs)
        kernel = np.ones(31) / 31  # prefer wide gaps over single far pixels
        smooth = np.convolve(openness, kernel, mode="same")
        spread = float(smooth.max() - smooth.min()) + 1e-6
        ahead = float((smooth[width // 2] - smooth.min()) / spread)
        return 2.0 * float(np.argmax(smooth)) / width - 1.0, ahead, False

    def _is_stuck(self, obs: np.ndarray, info: Mapping[str, Any]) -> bool:
        """Trying to move but nothing changes: by position if known, else by the frame."""
        moving = abs(self.sticks[0]) + abs(self.sticks[1]) > 0.4
        if "position_x" in info and "position_y" in info:
            pos = (float(info["position_x"]), float(info["position_y"]))
            still = self.prev_position is not None and np.hypot(pos[0] - self.prev_position[0], pos[1] - self.prev_position[1]) < 1.0
            self.prev_position = pos
        else:
            small = obs[::6, ::6].astype(np.float32)
            still = self.prev_small is not None and float(np.abs(small - self.prev_small).mean()) < 1.0
            self.prev_small = small
        self.stuck_steps = self.stuck_steps + 1 if (moving and still) else 0
        return self.stuck_steps >= 4

    # -- acting --------------------------------------------------------------

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        info = info or {}
        obs = np.asarray(obs)
        rng = self.rng
        target, ahead, aimed = self._target(obs, info)

        if self.gait_left <= 0:
            p = np.array([g[0] for g in GAITS])
            g = GAITS[rng.choice(len(GAITS), p=p / p.sum())]
            self.gait = (g[1], g[2])
            self.gait_left = int(rng.geometric(1.0 / MEAN_GAIT_STEPS))
        self.gait_left -= 1

        turn = float(np.clip(self.steer_gain * target, -1, 1))
        if ahead < 0.25:  # wall ahead: turn harder toward the open side
            turn = float(np.sign(target) or 1.0) * max(abs(turn), 0.7)
        if self._is_stuck(obs, info) and not self.escape_turn:
            self.escape_turn = float(rng.choice([-1.0, 1.0]))  # commit to one direction until it decays
            self.gait_left = 0
        if self.escape_turn:
            turn = self.escape_turn
            self.escape_turn *= 0.8 if rng.random() < 0.8 else 0.0
            if abs(self.escape_turn) < 0.3:
                self.escape_turn = 0.0
        pitch = float(info.get("pitch", 0.0))
        mu = np.array([self.gait[0], self.gait[1], turn, np.clip(-pitch / 20.0, -1, 1)])
        sigma = np.array([1.0, 0.7, 1.0, 0.25]) * self.sigma
        self.sticks += self.theta * (mu - self.sticks) + sigma * rng.standard_normal(4)
        self.sticks = np.clip(self.sticks, -1.0, 1.0)

        press = rng.random(controller.NUM_BUTTONS) < np.array([h[0] for h in BUTTON_HABITS])
        holds = rng.geometric(1.0 / np.array([h[1] for h in BUTTON_HABITS]))
        self.held = np.where((self.held <= 0) & press, holds, self.held)
        if aimed:
            self.held[ATTACK] = max(self.held[ATTACK], 3)
        if self.stuck_steps == 8:  # still stuck after escaping sideways: turn around
            self.held[TURN180] = 1

        action = np.empty(controller.ACTION_DIM, dtype=np.float32)
        action[: controller.NUM_BUTTONS] = self.held > 0
        action[controller.STICK_SLICE] = self.sticks
        self.held = np.maximum(self.held - 1, 0)
        return action


class RandomPolicy:
    """Uniform random controller vectors (the white-noise baseline)."""

    def __init__(self, seed: int | None = None):
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.space = controller.action_space(seed=seed)

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.space.sample()


def strafe(direction: float) -> np.ndarray:
    """The controller vector with only the left stick's x at ``direction`` (-1 left, 0 still, +1 right): take_cover's
    presets, which the strafing data policies press."""
    action = np.zeros(controller.ACTION_DIM, np.float32)
    action[controller.index_of("left_stick_x")] = direction
    return action


class StrafePolicy:
    """Random strafing held for a while: left stick x in {-1, 0, +1} (left, still, right), kept for a
    geometric number of steps (mean ``mean_hold``), nothing else pressed.

    The data policy for ``take_cover``, whose action set is exactly these three presets: a world model
    of that scenario sees every action the agent will take, and a held strafe crosses the room, which
    white-noise sticks (``random``) never do.
    """

    def __init__(self, seed: int | None = None, mean_hold: float = 3.0):
        if mean_hold < 1:
            raise ValueError(f"mean_hold must be >= 1 step, got {mean_hold}")
        self.mean_hold = mean_hold
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.direction, self.left = 0.0, 0

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if self.left <= 0:
            self.direction = float(self.rng.integers(-1, 2))
            self.left = int(self.rng.geometric(1.0 / self.mean_hold))
        self.left -= 1
        return strafe(self.direction)


class PacePolicy:
    """Back and forth: left stick x at -1 and +1 in turn, each leg held for a uniform number of steps in
    [``min_leg``, ``max_leg``] (the first leg half that, its direction a coin flip), never still.

    Temporally extended exploration for a corridor (ez-greedy's held actions, with the direction alternating):
    on take_cover a leg of ~26 steps just spans the room, shorter legs turn mid-room, longer ones press on a wall.
    The other blind policies hardly ever cross the room and turn at once (strafe's and sweep's holds include
    standing and repeat a direction), which is what a game-trained agent does, so a world model from them alone
    has not seen it (agents/RESULTS.md).
    """

    def __init__(self, seed: int | None = None, min_leg: int = 8, max_leg: int = 40):
        if not 1 <= min_leg <= max_leg:
            raise ValueError(f"legs: expected 1 <= min_leg <= max_leg, got {min_leg}, {max_leg}")
        self.min_leg, self.max_leg = int(min_leg), int(max_leg)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.direction = float(self.rng.choice([-1.0, 1.0]))
        self.left = max(1, self._leg() // 2)

    def _leg(self) -> int:
        return int(self.rng.integers(self.min_leg, self.max_leg + 1))

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if self.left <= 0:
            self.direction = -self.direction
            self.left = self._leg()
        self.left -= 1
        return strafe(self.direction)


class BouncePolicy:
    """Strafes until a wall stops it, then strafes back: left stick x at -1 or +1, reversed once the game's
    position has not moved for a step (after ``dwell`` more steps pressed on the wall, uniform in [0,
    ``max_dwell``]) and, with chance ``turn_chance`` a step, in the middle of the room; never still.

    What the game-trained take_cover agent does (it crosses wall to wall and turns at once, and dies 0.0002 a
    step at the walls, where blind policies, which stop there, die most): a world model from blind data alone
    learns "at a wall is deadly" and rates that play as dangerous (agents/RESULTS.md). It reads the player's
    position from ``info`` (``position_x``/``position_y``, which :class:`~wham_gym.games.doom.DoomEnv` reports), so
    it records data only; a dream cannot drive it (not :data:`BLIND`).
    """

    def __init__(self, seed: int | None = None, max_dwell: int = 2, turn_chance: float = 1 / 30,
                 stuck: float = 4.0):
        if max_dwell < 0 or not 0 <= turn_chance < 1 or stuck <= 0:
            raise ValueError(f"expected max_dwell >= 0, 0 <= turn_chance < 1 and stuck > 0 (map units), got "
                             f"{max_dwell}, {turn_chance}, {stuck}")
        self.max_dwell, self.turn_chance, self.stuck = int(max_dwell), float(turn_chance), float(stuck)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.direction = float(self.rng.choice([-1.0, 1.0]))
        self.last, self.dwell = None, None  # the last position; steps left to press on a wall (None: moving)

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if info is None or "position_x" not in info or "position_y" not in info:
            raise ValueError("the bounce policy reads the player's position from info['position_x'] and "
                             "info['position_y'] (DoomEnv reports them); got info without them: record it in the "
                             "game, or use a blind policy such as 'pace' where there is no game")
        here = np.array([info["position_x"], info["position_y"]], np.float64)
        if self.dwell is None and self.last is not None and np.hypot(*(here - self.last)) < self.stuck:
            self.dwell = int(self.rng.integers(0, self.max_dwell + 1))  # at a wall
        if self.dwell is not None:
            if self.dwell <= 0:
                self.direction, self.dwell = -self.direction, None
            else:
                self.dwell -= 1
        elif self.rng.random() < self.turn_chance:
            self.direction = -self.direction
        self.last = here
        return strafe(self.direction)


class StillPolicy:
    """Presses nothing: the floor a take_cover agent must beat (it lives about 40 steps, ~140 tics), and the
    policy a dream must punish for an agent trained in it to learn to move."""

    def __init__(self, seed: int | None = None):
        pass

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return np.zeros(controller.ACTION_DIM, np.float32)


# The policies that act without looking at the game (frames, depth, labels), so a dream can drive them too.
BLIND = ("random", "strafe", "jitter", "sweep", "pace", "still")

POLICIES = {
    "explore": ExplorePolicy,
    "random": RandomPolicy,
    "strafe": StrafePolicy,
    # take_cover's presets with other hold lengths, so a world model also sees the inputs an agent may
    # prefer: a new preset every step (what PPO found the strafe-only dream too lenient on), and long sweeps.
    "jitter": functools.partial(StrafePolicy, mean_hold=1.0),
    "sweep": functools.partial(StrafePolicy, mean_hold=12.0),
    "pace": PacePolicy,
    "bounce": BouncePolicy,
    "still": StillPolicy,
}


def make_policy(name: str, seed: int | None = None):
    """A data-collection policy by name: ``explore``, ``random``, ``strafe``, ``jitter``, ``sweep``, ``pace``,
    ``bounce`` or ``still``."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    return POLICIES[name](seed=seed)
