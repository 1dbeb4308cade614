"""A training run's directory: its settings, checkpoints, logs and result, and how it resumes.

    config.json        the run's settings (a resumed run must match the ones that shape the policy)
    progress.csv       SB3's CSV log of the current segment; earlier segments are progress.<k>.csv
    tb/                TensorBoard events (when tensorboard is installed)
    eval.jsonl         one line per evaluation: timesteps, wall_s, and per world mean/std/episodes/...
    checkpoints/       step_<n>.zip, step_<n>.replay.npz (SAC, newest only), step_<n>.json (written last: marks
                       it complete)
    final.zip          the final model
    result.json        the final evaluation, env steps and wall-clock

SB3's CSV logger truncates its file when it opens it, so a resumed segment first moves
the old log aside (trimmed to the checkpoint it resumes from); :meth:`RunDir.progress_rows`
stitches the segments back together.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from typing import Any

import numpy as np

from wham_gym.atomic import atomic_write

from .wrappers import Wrapping, parse_obs_size

# Settings a resumed run must share with its checkpoints (anything else may change, e.g. --steps).
IDENTITY = ("algo", "world", "model", "scenario", "num_envs", "obs_size", "frame_stack", "reinjection",
            "max_episode_steps", "action_set", "action_axes", "grayscale", "reward_scale", "game_kwargs",
            "tokenizer_view", "observe", "temperature", "decoding", "refresh_every", "context_steps", "dream_ends",
            "dream_starts", "end_risk", "dream_horizon", "ensemble", "pi_layers", "action_repeat", "action_history",
            "ends_in_expectation")
# Identity settings newer than some run directories, and the value those runs had.
LATER = {"action_set": None, "action_axes": False, "grayscale": False, "reward_scale": 1.0, "game_kwargs": {},
         "tokenizer_view": False, "observe": "pixels", "temperature": 0.9, "decoding": "exact", "refresh_every": 1,
         "context_steps": None, "dream_ends": "sampled", "dream_starts": None, "end_risk": None,
         "dream_horizon": None, "ensemble": None, "pi_layers": 2, "action_repeat": 1,
         "action_history": 0, "ends_in_expectation": False}
# The dream's engine settings in a run's config (WHAMVectorEnv keywords).
DREAM_SETTINGS = ("temperature", "decoding", "refresh_every", "context_steps")


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), binary=False)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def wrapping_from_config(cfg: dict) -> Wrapping:
    return Wrapping(obs_size=parse_obs_size(cfg.get("obs_size")), frame_stack=int(cfg.get("frame_stack", 1)),
                    rescale=True, action_set=cfg.get("action_set"),
                    action_axes=bool(cfg.get("action_axes", False)), grayscale=bool(cfg.get("grayscale", False)),
                    reward_scale=float(cfg.get("reward_scale", 1.0)),
                    tokenizer_view=bool(cfg.get("tokenizer_view", False)), observe=cfg.get("observe", "pixels"),
                    action_repeat=int(cfg.get("action_repeat", 1)),
                    action_history=int(cfg.get("action_history", 0)))


def dream_settings(cfg: dict) -> dict:
    """The dream's settings of a run (its config, or the defaults of runs older than them): the engine's, and how
    its episodes end when that is the world model's drawn end frame (training and evaluation dreams alike)."""
    settings = {k: cfg.get(k, LATER[k]) for k in DREAM_SETTINGS}
    if cfg.get("compile"):  # speed only (the same tokens), so not part of a run's identity
        settings["compile"] = True
    if cfg.get("dream_ends") in ("drawn", "risk") or str(cfg.get("dream_ends")).startswith("card:"):
        settings["ends"] = cfg["dream_ends"]
    if cfg.get("dream_ends") == "risk":
        settings["end_risk"] = tuple(cfg.get("end_risk") or (1.0, 0.5))
    return settings


class RunDir:
    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.checkpoints_dir = os.path.join(self.path, "checkpoints")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- settings and result --------------------------------------------------
    def read_config(self) -> dict | None:
        path = self.file("config.json")
        return read_json(path) if os.path.exists(path) else None

    def check_config(self, cfg: dict) -> None:
        """Raise if this directory holds a run whose policy-shaping settings differ from ``cfg``."""
        old = self.read_config()
        if old is None:
            return
        # settings added later read as their default in older runs' configs
        diff = [f"{k}: {old.get(k, LATER.get(k))!r} there, {cfg.get(k)!r} now" for k in IDENTITY
                if old.get(k, LATER.get(k)) != cfg.get(k)]
        if diff:
            raise ValueError(f"{self.path} holds a run with other settings ({'; '.join(diff)}); "
                             "pass another --out, or delete that directory to start over")

    def write_config(self, cfg: dict) -> None:
        os.makedirs(self.path, exist_ok=True)
        write_json(self.file("config.json"), cfg)

    def read_result(self) -> dict | None:
        path = self.file("result.json")
        return read_json(path) if os.path.exists(path) else None

    def write_result(self, result: dict) -> None:
        write_json(self.file("result.json"), result)

    # -- checkpoints ----------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, str, dict]]:
        """Complete checkpoints, oldest first: (timesteps, zip path, state)."""
        out = []
        for state_path in glob.glob(os.path.join(self.checkpoints_dir, "step_*.json")):
            m = re.search(r"step_(\d+)\.json$", state_path)
            zip_path = state_path[:-5] + ".zip"
            if m and os.path.exists(zip_path):
                out.append((int(m.group(1)), zip_path, read_json(state_path)))
        return sorted(out, key=lambda c: c[0])

    def latest_checkpoint(self) -> tuple[int, str, dict] | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(self, model, state: dict, keep: int = 3, replay: bool = False) -> str:
        """Model (+ SAC's replay buffer), then the state file that marks the checkpoint complete."""
        os.makedirs(self.checkpoints_dir, exist_ok=True)
        stem = os.path.join(self.checkpoints_dir, f"step_{state['timesteps']:09d}")
        atomic_write(stem + ".zip", model.save)
        if replay:
            atomic_write(stem + ".replay.npz", lambda f: save_replay(model.replay_buffer, f))
        write_json(stem + ".json", state)
        found = self.checkpoints()
        for i, (_, zip_path, _) in enumerate(found[:-1]):
            # Only the newest replay buffer is kept: each is up to the whole buffer (2 GiB by default).
            suffixes = (".json", ".zip", ".replay.npz") if i < len(found) - keep else (".replay.npz",)
            for suffix in suffixes:  # the marker first: never a marker without its zip
                path = zip_path[:-4] + suffix
                if os.path.exists(path):
                    os.remove(path)
        return stem + ".zip"

    def save_final(self, model) -> str:
        atomic_write(self.file("final.zip"), model.save)
        return self.file("final.zip")

    # -- logs -----------------------------------------------------------------
    def eval_entries(self) -> list[dict]:
        path = self.file("eval.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def append_eval(self, entry: dict) -> None:
        with open(self.file("eval.jsonl"), "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def start_segment(self, timesteps: int) -> None:
        """Before logging resumes at ``timesteps``: drop evaluations past it, move the CSV log aside."""
        entries = [e for e in self.eval_entries() if e["timesteps"] <= timesteps]
        if os.path.exists(self.file("eval.jsonl")):
            atomic_write(self.file("eval.jsonl"), lambda f: f.write("".join(json.dumps(e, sort_keys=True) + "\n"
                                                                            for e in entries)), binary=False)
        current = self.file("progress.csv")
        if os.path.exists(current) and os.path.getsize(current) > 0:
            with open(current, newline="") as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames or [], [r for r in reader if _timesteps(r) <= timesteps]

            def write(f):
                out = csv.DictWriter(f, fieldnames=fields)
                out.writeheader()
                out.writerows(rows)

            atomic_write(self.file(f"progress.{len(self._segments())}.csv"), write, binary=False)
            os.remove(current)

    def _segments(self) -> list[str]:
        parts = glob.glob(self.file("progress.*.csv"))
        return sorted(parts, key=lambda p: int(re.search(r"progress\.(\d+)\.csv$", p).group(1)))

    def progress_rows(self) -> list[dict]:
        """The CSV rows of all segments in order (each trimmed to its checkpoint when the next began)."""
        rows: list[dict] = []
        for path in self._segments() + [self.file("progress.csv")]:
            if os.path.exists(path):
                with open(path, newline="") as f:
                    rows += list(csv.DictReader(f))
        return rows


REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_replay(buffer, f) -> None:
    """The filled part of an SB3 ReplayBuffer (SB3's own pickle writes every allocated slot: 2 GiB by default)."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: getattr(buffer, k)[:n] for k in REPLAY_FIELDS if getattr(buffer, k, None) is not None}
    np.savez(f, pos=buffer.pos, full=buffer.full, **arrays)


def load_replay(buffer, path: str) -> None:
    """Fill an SB3 ReplayBuffer of the same shape from :func:`save_replay`'s file."""
    with np.load(path) as data:
        for k in REPLAY_FIELDS:
            if k in data:
                dst, src = getattr(buffer, k), data[k]
                if src.shape[1:] != dst.shape[1:] or len(src) > len(dst):
                    raise ValueError(f"{path}: {k} {src.shape} does not fit the replay buffer's {dst.shape}")
                dst[:len(src)] = src
        buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])


def _timesteps(row: dict) -> float:
    try:
        return float(row.get("time/total_timesteps") or 0)
    except ValueError:
        return 0.0
