"""ViZDoom driven by the 16-dim controller: the real game used as ground truth.

``DoomEnv`` is a plain ``gymnasium.Env`` (registered as ``wham_gym/Doom-v0``)
whose action space is the same controller Box as the world-model envs, and
whose observations are 180x300x3 uint8 frames: the game renders at 320x180 and
10 px are cropped on each side to match WHAM's 300x180.

Choices, all measured with vizdoom 1.3.2 (see ``CONTROLLER_MAPPING``):

* Default scenario ``deathmatch``: the player walks a whole map with monsters,
  pickups and weapons, so recordings cover movement, turning, combat and
  weapon changes. Spawn points vary with the seed.
* Frame skip alternates 4 and 3 tics: Doom runs 35 tics/s, so two agent steps
  span 7 tics = 0.2 s, i.e. exactly WHAM's 10 Hz. Each action is held for its
  step's tics.
* ``reset`` plays ``SETTLE_TICS`` no-op tics first, past the spawn freeze (the
  player ignores input for ~8 tics) and the renderer's weapon-bob state, so the
  first action already counts and a reused game renders like a fresh one.
* Sticks are quantized through WHAM's 11 bins before reaching the game, so a
  recorded action is exactly what a world model sees.
* ``terminated`` on death or map exit, ``truncated`` on timeout. The game has no
  frame after the episode ends; the terminal observation repeats the last
  rendered frame instead of vizdoom's all-black one.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import weakref
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from wham_gym import controller

HEIGHT, WIDTH = 180, 300
RENDER_WIDTH = 320
CROP = (RENDER_WIDTH - WIDTH) // 2  # 10 px on each side

DEFAULT_SCENARIO = "deathmatch"
FRAME_SKIP = (4, 3)  # alternating: 7 tics per 2 steps at 35 tics/s = 10 Hz
TICRATE = 35
SETTLE_TICS = 20  # rendered no-op tics at reset (see DoomEnv.reset)
DEFAULT_TIMEOUT_STEPS = 18_000  # 30 min at 10 Hz, for scenarios without their own timeout

# Controller button index -> vizdoom button. RELOAD, ZOOM and LAND do nothing in
# Freedoom and ALTATTACK uses no ammo, so they are left out.
BUTTON_MAPPING = (
    "ATTACK",
    "USE",
    "JUMP",
    "CROUCH",
    "SPEED",
    "TURN180",
    "SELECT_NEXT_WEAPON",
    "SELECT_PREV_WEAPON",
    "SELECT_WEAPON1",
    "SELECT_WEAPON2",
    "SELECT_WEAPON3",
    "SELECT_WEAPON4",
)

# Stick -> (vizdoom delta button, value per tic at stick = +1, measured effect).
# Sign conventions follow a gamepad: stick up is -1 on both y axes.
STICK_MAPPING = (
    ("left_stick_x", "MOVE_LEFT_RIGHT_DELTA", 50.0, "+1 strafes right, -1 strafes left"),
    ("left_stick_y", "MOVE_FORWARD_BACKWARD_DELTA", -50.0, "-1 (up) moves forward, +1 backward"),
    ("right_stick_x", "TURN_LEFT_RIGHT_DELTA", 8.0, "+1 turns right (ANGLE decreases) 8 deg/tic"),
    ("right_stick_y", "LOOK_UP_DOWN_DELTA", -4.0, "-1 (up) looks up (PITCH decreases) 4 deg/tic"),
)

# The whole controller as one readable table: (index, controller name, game input, scale/meaning).
CONTROLLER_MAPPING = tuple(
    (i, controller.ACTION_NAMES[i], name, "pressed when >= 0.5") for i, name in enumerate(BUTTON_MAPPING)
) + tuple(
    (controller.index_of(stick), stick, name, f"x{scale:g} per tic; {meaning}")
    for stick, name, scale, meaning in STICK_MAPPING
)

# Name in ``info`` -> vizdoom game variable.
GAME_VARIABLES = {
    "position_x": "POSITION_X",
    "position_y": "POSITION_Y",
    "position_z": "POSITION_Z",
    "angle": "ANGLE",
    "pitch": "PITCH",
    "health": "HEALTH",
    "armor": "ARMOR",
    "ammo": "SELECTED_WEAPON_AMMO",
    "selected_weapon": "SELECTED_WEAPON",
    "kills": "KILLCOUNT",
    "items": "ITEMCOUNT",
    "damage_made": "DAMAGECOUNT",
    "damage_taken": "DAMAGE_TAKEN",
    "dead": "DEAD",
}
GAME_VARIABLE_NAMES = tuple(GAME_VARIABLES)
# Counters reported from the episode's start: vizdoom carries DAMAGECOUNT over
# from the previous episode of the same game (measured), so a reused game would
# disagree with a fresh one.
EPISODE_COUNTERS = ("kills", "items", "damage_made", "damage_taken")

# Reward shaping term -> vizdoom setter, added on top of the scenario's own reward.
# Values are per unit of the event (per kill, per hit point, per tic for "living").
REWARD_SHAPING = {
    "kill": "set_kill_reward",
    "damage_made": "set_damage_made_reward",
    "damage_taken": "set_damage_taken_penalty",  # a positive value is subtracted
    "hit": "set_hit_reward",
    "item": "set_item_reward",
    "health": "set_health_reward",
    "armor": "set_armor_reward",
    "secret": "set_secret_reward",
    "map_exit": "set_map_exit_reward",
    "living": "set_living_reward",
    "death": "set_death_penalty",  # a positive value is subtracted
}

INFO_BUFFERS = ("depth", "labels")
_NOOP = [0.0] * (len(BUTTON_MAPPING) + len(STICK_MAPPING))

# vizdoom creates _vizdoom/ in the current directory at init; chdir is
# process-wide, so inits serialize on this lock.
_CHDIR_LOCK = threading.Lock()


def import_vizdoom():
    """Import vizdoom or explain how to install it."""
    try:
        import vizdoom
    except ImportError as exc:
        raise ImportError(
            "the Doom environment needs vizdoom; install it with: pip install 'wham-gym[doom]'"
        ) from exc
    return vizdoom


def available_scenarios() -> tuple[str, ...]:
    """Scenario names shipped with vizdoom (its ``scenarios/*.cfg``)."""
    vzd = import_vizdoom()
    return tuple(sorted(f[:-4] for f in os.listdir(vzd.scenarios_path) if f.endswith(".cfg")))


def scenario_config(scenario: str) -> str:
    """Path of a scenario's .cfg: a vizdoom scenario name or an existing .cfg path."""
    if scenario.endswith(".cfg") and os.path.isfile(scenario):
        return os.path.abspath(scenario)
    vzd = import_vizdoom()
    path = os.path.join(vzd.scenarios_path, f"{scenario}.cfg")
    if not os.path.isfile(path):
        raise ValueError(
            f"unknown Doom scenario {scenario!r}; expected one of {', '.join(available_scenarios())} "
            "or a path to a vizdoom .cfg file"
        )
    return path


def has_display() -> bool:
    """Whether a window can be opened (X11/Wayland, or SDL told to use a specific driver)."""
    if os.name == "nt" or os.environ.get("SDL_VIDEODRIVER"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def game_action(action: np.ndarray) -> list[float]:
    """One controller vector -> vizdoom's action list (12 buttons, then 4 stick deltas).

    The vector is clipped into the Box and quantized to WHAM's bins first.
    """
    q = controller.quantize(controller.clip_actions(np.asarray(action, dtype=np.float32)))
    sticks = q[controller.STICK_SLICE]
    return [float(b) for b in q[: controller.NUM_BUTTONS]] + [
        float(s) * scale for s, (_, _, scale, _) in zip(sticks, STICK_MAPPING)
    ]


class DoomEnv(gym.Env):
    """A ViZDoom scenario behind the 16-dim controller at 10 Hz, 180x300 RGB frames.

    Args:
        scenario: vizdoom scenario name (``deathmatch``, ``defend_the_center``, ...)
            or a path to a .cfg.
        frame_skip: tics per step, an int or a cycle such as ``(4, 3)`` (the default, 10 Hz).
        reward_shaping: extra reward terms added to the scenario's own reward, e.g.
            ``{"kill": 1.0, "damage_taken": 0.01, "living": -0.001}``; see ``REWARD_SHAPING``.
        max_steps: internal timeout in agent steps (truncated). ``None`` keeps the
            scenario's own timeout, or ``DEFAULT_TIMEOUT_STEPS`` if it has none.
        info_buffers: extra per-step data in ``info``: ``"depth"`` (180x300 uint8)
            and/or ``"labels"`` (visible objects as dicts with name and screen box).
        render_mode: ``"rgb_array"`` or ``"human"`` (a pygame window; needs a display).
        render_hud: draw Doom's status bar into the frames.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        scenario: str = DEFAULT_SCENARIO,
        frame_skip: int | Sequence[int] = FRAME_SKIP,
        reward_shaping: Mapping[str, float] | None = None,
        max_steps: int | None = None,
        info_buffers: Sequence[str] = (),
        render_mode: str | None = None,
        render_hud: bool = False,
    ):
        vzd = import_vizdoom()
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if render_mode == "human" and not has_display():
            raise RuntimeError(
                "render_mode='human' needs a display, and none was found (DISPLAY/WAYLAND_DISPLAY unset); "
                "use render_mode='rgb_array' on a headless machine"
            )
        self.frame_skip = (frame_skip,) if isinstance(frame_skip, int) else tuple(int(t) for t in frame_skip)
        if not self.frame_skip or min(self.frame_skip) < 1:
            raise ValueError(f"frame_skip must be a positive int or a non-empty sequence of them, got {frame_skip!r}")
        unknown = set(info_buffers) - set(INFO_BUFFERS)
        if unknown:
            raise ValueError(f"unknown info_buffers {sorted(unknown)}; expected a subset of {INFO_BUFFERS}")
        shaping = dict(reward_shaping or {})
        unknown = set(shaping) - set(REWARD_SHAPING)
        if unknown:
            raise ValueError(f"unknown reward_shaping terms {sorted(unknown)}; expected some of {sorted(REWARD_SHAPING)}")

        self.scenario = scenario
        self.render_mode = render_mode
        self.info_buffers = tuple(info_buffers)
        self.observation_space = gym.spaces.Box(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
        self.action_space = controller.action_space()

        _exit_on_sigterm()
        self._workdir = tempfile.mkdtemp(prefix="wham-gym-doom-")
        self._game = game = vzd.DoomGame()
        # Close the game before deleting its folder, even if close() is never called.
        self._finalizer = weakref.finalize(self, _shutdown, game, self._workdir)
        game.load_config(scenario_config(scenario))
        game.set_doom_config_path(os.path.join(self._workdir, "_vizdoom.ini"))
        game.set_screen_resolution(vzd.ScreenResolution.RES_320X180)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.set_render_hud(render_hud)
        game.set_available_buttons(
            [getattr(vzd.Button, b) for b in BUTTON_MAPPING] + [getattr(vzd.Button, b) for _, b, _, _ in STICK_MAPPING]
        )
        self._variables = [getattr(vzd.GameVariable, v) for v in GAME_VARIABLES.values()]
        game.set_available_game_variables(self._variables)
        game.set_depth_buffer_enabled("depth" in self.info_buffers)
        game.set_labels_buffer_enabled("labels" in self.info_buffers)
        for term, value in shaping.items():
            getattr(game, REWARD_SHAPING[term])(float(value))

        if max_steps is None:
            timeout_tics = game.get_episode_timeout()
            mean_skip = sum(self.frame_skip) / len(self.frame_skip)
            max_steps = int(np.ceil(timeout_tics / mean_skip)) if timeout_tics else DEFAULT_TIMEOUT_STEPS
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)

        with _CHDIR_LOCK:
            cwd = os.getcwd()
            os.chdir(self._workdir)
            try:
                game.init()
            finally:
                os.chdir(cwd)

        self._obs = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        self._info: dict[str, Any] = {}
        self._steps = 0
        self._episode_seed: int | None = None
        self._baseline: dict[str, float] = {}
        self._window = None

    # -- gymnasium API -------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # The game's seed comes from the env's generator, so reset(seed=s) replays exactly.
        self._episode_seed = int(self.np_random.integers(2**31))
        self._game.set_seed(self._episode_seed)
        self._game.new_episode()
        # Settle before the first frame: the player ignores input for the first ~8 tics,
        # and the renderer keeps a static weapon-bob state from the previous episode that
        # needs up to 16 standing-still frames to return to rest. Without this, a reused
        # game renders its weapon differently from a fresh one and replays are inexact.
        for _ in range(SETTLE_TICS):
            self._game.make_action(_NOOP, 1)
        self._steps = 0
        self._baseline = {}
        self._read_state()
        self._baseline = {name: self._info[name] for name in EPISODE_COUNTERS}
        self._info.update({name: 0.0 for name in EPISODE_COUNTERS})
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), dict(self._info)

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        controller.validate_actions(action, "action", batch=None)
        if action.shape != (controller.ACTION_DIM,):
            raise ValueError(f"action: expected shape ({controller.ACTION_DIM},), got {action.shape}")
        if self._episode_seed is None:
            raise RuntimeError("DoomEnv.step() called before reset()")
        if self._game.is_episode_finished():
            raise RuntimeError("DoomEnv.step() called after the episode ended; call reset()")
        tics = self.frame_skip[self._steps % len(self.frame_skip)]
        reward = float(self._game.make_action(game_action(action), tics))
        self._steps += 1

        game = self._game
        finished = game.is_episode_finished()
        dead = bool(game.is_player_dead())
        timed_out = finished and not dead and game.is_episode_timeout_reached()
        terminated = dead or (finished and not timed_out)
        truncated = not terminated and (timed_out or self._steps >= self.max_steps)
        self._read_state()
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), reward, terminated, truncated, dict(self._info)

    def render(self):
        if self.render_mode == "rgb_array":
            return self._obs.copy()
        if self.render_mode == "human":
            self._show(self._obs)
        return None

    def close(self):
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None
        self._finalizer()

    # -- internals -----------------------------------------------------------

    def _read_state(self) -> None:
        """Refresh the observation and info; after the episode ends keep the last frame."""
        state = self._game.get_state()
        if state is not None:
            self._obs = np.ascontiguousarray(state.screen_buffer[:, CROP : CROP + WIDTH])
            values = state.game_variables
        else:  # episode over: the game has no frame, but its variables are still readable
            values = [self._game.get_game_variable(v) for v in self._variables]
        info: dict[str, Any] = {name: float(v) for name, v in zip(GAME_VARIABLE_NAMES, values)}
        for name, start in self._baseline.items():
            info[name] -= start
        info["tic"] = int(self._game.get_episode_time())
        info["episode_seed"] = self._episode_seed
        if state is not None and "depth" in self.info_buffers:
            info["depth"] = np.ascontiguousarray(state.depth_buffer[:, CROP : CROP + WIDTH])
        if state is not None and "labels" in self.info_buffers:
            info["labels"] = [
                {
                    "name": label.object_name,
                    "x": label.x - CROP,
                    "y": label.y,
                    "width": label.width,
                    "height": label.height,
                }
                for label in state.labels
            ]
        self._info = info

    def _show(self, frame: np.ndarray) -> None:
        import pygame

        scale = 3
        if self._window is None:
            pygame.display.init()
            pygame.display.set_caption(f"wham-gym Doom: {self.scenario}")
            self._window = pygame.display.set_mode((WIDTH * scale, HEIGHT * scale))
        surface = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        self._window.blit(pygame.transform.scale(surface, self._window.get_size()), (0, 0))
        pygame.event.pump()
        pygame.display.flip()


def _exit_on_sigterm() -> None:
    """Make SIGTERM a normal exit, so the finalizers close the games.

    vizdoom's game processes outlive a Python killed by SIGTERM (``kill``, ``pkill``, job
    schedulers) and ignore SIGTERM themselves. Only where the program has not chosen its
    own handler, and only from the main thread (the only one that may set it).
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_exit)


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)


def _shutdown(game, workdir: str) -> None:
    try:
        game.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
