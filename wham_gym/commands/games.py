"""``wham-gym record``, ``wham-gym mirror`` and ``wham-gym play-doom``.

vizdoom and pygame are imported only when a command runs, so ``wham-gym --help``
works without the ``doom`` extra.
"""

from __future__ import annotations

import argparse
import sys
import time

DOOM_INSTALL_HINT = "pip install 'wham-gym[doom]'"
# wham_gym.games.explore.POLICIES, named here so that --help imports no game code (a test keeps them equal)
RECORD_POLICIES = ("explore", "random", "strafe", "jitter", "sweep", "pace", "bounce", "still")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "record",
        help="record ViZDoom episodes into WHAM's dataset layout (one .npz per episode)",
        description="Record ViZDoom episodes driven by the 16-dim controller. Reruns into the same "
        "--out resume: complete episodes are kept, missing ones recorded.",
    )
    p.add_argument("--scenario", default=None, help="vizdoom scenario name or .cfg path (default: deathmatch)")
    p.add_argument("--episodes", type=int, default=1, help="number of episodes (default: 1)")
    p.add_argument("--policy", choices=RECORD_POLICIES, default="explore",
                   help="data-collection policy: explore (steering exploration), random (white-noise controller), "
                        "strafe (random left / still / right, each held for 3 steps on average; take_cover's "
                        "action set), jitter (the same, a new one every step), sweep (held for 12 steps on average), "
                        "pace (left and right in turn, legs of 8-40 steps, never still), bounce (strafes until a wall "
                        "stops it, then back; reads the game's position), still (nothing pressed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--max-steps", type=int, default=None, help="steps per episode cap at 10 Hz (default: the scenario's timeout)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each episode's seeds derive from it (default: 0)")
    p.add_argument("--hud", action="store_true",
                   help="draw Doom's status bar (health, face) into the frames, so damage is visible")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="record on Ray workers: a new local Ray, or the cluster at ADDRESS (extra [ray]); "
                        "the episode files are the same bytes and are written here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_record)

    p = subparsers.add_parser(
        "mirror",
        help="write a recording mirrored left-right (the scene flipped, strafe and turn negated): more "
             "training data for a symmetric scenario",
        description="Mirror every episode of a recording folder into another folder (same names; reruns "
                    "resume): frames flipped left-right above the status bar, the sticks' x axes negated, game "
                    "variables dropped. Train on both folders (wham-gym train --data SRC OUT).",
    )
    p.add_argument("src", help="a recording folder (wham-gym record --out)")
    p.add_argument("out", help="the folder for the mirrored episodes")
    p.add_argument("--keep-bottom", type=int, default=None, metavar="ROWS",
                   help="bottom rows left as they are (the status bar; default 32, 0 mirrors whole frames)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_mirror)

    p = subparsers.add_parser(
        "play-doom",
        help="play a ViZDoom scenario yourself with the 16-dim controller (needs a display)",
        description="Keyboard: WASD move, arrows turn/look (or the mouse), Ctrl/left click fire, E/Space use, "
        "J jump, C crouch, Shift run, Q turn around, Tab/Backspace next/previous weapon, 1-4 weapons, Esc quits. "
        "A connected gamepad drives the sticks directly.",
    )
    p.add_argument("--scenario", default=None, help="vizdoom scenario name or .cfg path (default: deathmatch)")
    p.add_argument("--seed", type=int, default=None, help="episode seed")
    p.add_argument("--episodes", type=int, default=1, help="episodes to play (default: 1)")
    p.set_defaults(func=run_play)


def _require_doom() -> None:
    try:
        import vizdoom  # noqa: F401
    except ImportError:
        raise SystemExit(f"wham-gym: this command needs vizdoom; install it with: {DOOM_INSTALL_HINT}") from None


def run_record(args: argparse.Namespace) -> int:
    _require_doom()
    from wham_gym.games.recorder import record

    executor = None
    if args.ray is not None:
        from wham_gym.cluster import RayExecutor

        executor = RayExecutor(address=args.ray or None)
    manifest = record(
        out=args.out,
        scenario=args.scenario,
        episodes=args.episodes,
        policy=args.policy,
        workers=args.workers,
        max_steps=args.max_steps,
        seed=args.seed,
        env_kwargs={"render_hud": True} if args.hud else None,
        progress=not args.no_progress,
        executor=executor,
    )
    run = manifest["last_run"]
    print(
        f"{args.out}: {manifest['total_episodes']} episodes, {manifest['total_frames']} frames, "
        f"{manifest['total_bytes'] / max(manifest['total_frames'], 1) / 1024:.1f} KiB/frame; "
        f"this run {run['frames']} frames at {run['frames_per_s'] or 0:.0f} frames/s"
    )
    return 0


def run_mirror(args: argparse.Namespace) -> int:
    from ..data.augment import STATUS_BAR_ROWS, mirror_recording

    keep = STATUS_BAR_ROWS if args.keep_bottom is None else args.keep_bottom
    n = mirror_recording(args.src, args.out, keep_bottom=keep, progress=not args.no_progress)
    print(f"mirrored {n} episodes of {args.src} into {args.out}")
    return 0


def run_play(args: argparse.Namespace) -> int:
    _require_doom()
    try:
        import pygame
    except ImportError:
        raise SystemExit(f"wham-gym play-doom: needs pygame; install it with: {DOOM_INSTALL_HINT}") from None
    from wham_gym.games.doom import DoomEnv, has_display

    if not has_display():
        print("wham-gym play-doom: error: no display found (DISPLAY/WAYLAND_DISPLAY unset); run it on a desktop", file=sys.stderr)
        return 1
    env = DoomEnv(scenario=args.scenario or "deathmatch", render_mode="human")
    try:
        for episode in range(args.episodes):
            obs, info = env.reset(seed=None if args.seed is None else args.seed + episode)
            pygame.event.set_grab(True)
            pygame.mouse.set_visible(False)
            pygame.mouse.get_rel()
            total, done = 0.0, False
            while not done:
                tick = time.perf_counter()
                action = _human_action(pygame)
                if action is None:
                    return 0
                obs, reward, terminated, truncated, info = env.step(action)
                total += reward
                done = terminated or truncated
                time.sleep(max(0.0, 0.1 - (time.perf_counter() - tick)))  # 10 Hz, the game's step rate
            print(f"episode {episode}: return {total:.1f}, kills {info['kills']:.0f}, "
                  f"{'died/exited' if terminated else 'timed out'}")
    finally:
        env.close()
    return 0


_KEYS = {  # controller button index -> pygame key names
    0: ("left ctrl", "right ctrl"),
    1: ("e", "space"),
    2: ("j",),
    3: ("c",),
    4: ("left shift", "right shift"),
    5: ("q",),
    6: ("tab",),
    7: ("backspace",),
    8: ("1",),
    9: ("2",),
    10: ("3",),
    11: ("4",),
}


def _human_action(pygame):
    """Keyboard, mouse and gamepad -> one controller vector (None when the player quits)."""
    import numpy as np

    for event in pygame.event.get():
        if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
            return None
    keys = pygame.key.get_pressed()
    down = lambda name: keys[pygame.key.key_code(name)]  # noqa: E731
    action = np.zeros(16, dtype=np.float32)
    for index, names in _KEYS.items():
        action[index] = float(any(down(n) for n in names))
    action[0] = max(action[0], float(pygame.mouse.get_pressed()[0]))
    mx, my = pygame.mouse.get_rel()
    action[12] = float(down("d")) - float(down("a"))
    action[13] = float(down("s")) - float(down("w"))  # stick up (-1) walks forward
    action[14] = np.clip(float(down("right")) - float(down("left")) + mx / 40.0, -1, 1)
    action[15] = np.clip(float(down("down")) - float(down("up")) + my / 40.0, -1, 1)
    if not pygame.joystick.get_init():
        pygame.joystick.init()
    if pygame.joystick.get_count():
        pad = pygame.joystick.Joystick(0)
        axes = [pad.get_axis(i) if i < pad.get_numaxes() else 0.0 for i in (0, 1, 3, 4)]
        for i, value in enumerate(axes):
            if abs(value) > 0.1:  # dead zone
                action[12 + i] = value
    return np.clip(action, -1, 1)
