"""Record game episodes into a folder of ``.npz`` files, in parallel and resumably.

Layout of ``out``::
    episode_000000.npz ...   one compressed episode each (wham_gym.data.episodes)
    manifest.json            settings, and per episode: file, seed, frames, sha256

Every episode's seeds derive from (base seed, episode index) alone, so the
recording does not depend on the number of workers or on interruptions, and
equal content gives byte-equal files. Episodes and the manifest are written
atomically; a rerun with the same settings skips the episodes already on disk.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_module
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable

import numpy as np

from wham_gym import controller
from wham_gym.atomic import atomic_write
from wham_gym.data.episodes import Episode, is_complete, read_episode, write_episode
from wham_gym.games.doom import DEFAULT_SCENARIO, FRAME_SKIP, GAME_VARIABLE_NAMES, DoomEnv
from wham_gym.games.explore import POLICIES, make_policy

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "wham-gym-recording/1"
PROGRESS_EVERY = 32  # frames between progress reports from a worker
# Settings that must match for a rerun to resume into the same folder.
RESUME_KEYS = ("scenario", "policy", "base_seed", "max_steps", "env_kwargs")


def episode_file(index: int) -> str:
    return f"episode_{index:06d}.npz"


def episode_seeds(base_seed: int, index: int) -> tuple[int, int]:
    """(game seed, policy seed) for episode ``index``: independent streams from one base seed."""
    game, policy = np.random.SeedSequence([base_seed, index]).generate_state(2)
    return int(game) & 0x7FFFFFFF, int(policy)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1) + "\n"), binary=False)


# -- one episode (runs inside a worker) ------------------------------------------

_ENVS: dict[tuple, Any] = {}  # one game per worker process and setting, reused across episodes
_PROGRESS = None  # queue to the parent for frame counts


def _init_worker(progress_queue) -> None:
    global _PROGRESS
    _PROGRESS = progress_queue


def _env(scenario: str, max_steps: int | None, info_buffers: tuple[str, ...], env_kwargs: dict):
    key = (scenario, max_steps, info_buffers, json.dumps(env_kwargs, sort_keys=True))
    if key not in _ENVS:
        _ENVS[key] = DoomEnv(scenario=scenario, max_steps=max_steps, info_buffers=info_buffers, **env_kwargs)
    return _ENVS[key]


def record_episode(job: dict, report: Callable[[int], None] | None = None) -> dict:
    """Play one episode with the job's policy and seeds, write it, and return its manifest entry."""

    report = report or (lambda n: _PROGRESS.put(n) if _PROGRESS is not None else None)
    game_seed, policy_seed = episode_seeds(job["base_seed"], job["index"])
    # The explore policy steers with the depth and labels buffers.
    buffers = ("depth", "labels") if job["policy"] == "explore" else ()
    env = _env(job["scenario"], job["max_steps"], buffers, job["env_kwargs"])
    factory = job.get("factory")  # a policy object's maker (an agent), else a policy by name
    policy = factory(seed=policy_seed) if factory is not None else make_policy(job["policy"], seed=policy_seed)

    images, actions, rewards, terminated, truncated, variables = [], [], [], [], [], []
    obs, info = env.reset(seed=game_seed)
    done = False
    while not done:
        action = controller.clip_actions(np.asarray(policy.act(obs, info), dtype=np.float32))
        images.append(obs.transpose(2, 0, 1))
        actions.append(controller.to_wham(action))
        obs, reward, term, trunc, info = env.step(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        variables.append([info[name] for name in GAME_VARIABLE_NAMES])
        done = term or trunc
        if len(images) % PROGRESS_EVERY == 0:
            report(PROGRESS_EVERY)
    report(len(images) % PROGRESS_EVERY)

    episode = Episode(
        images=np.stack(images),
        wham_actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, np.float32),
        terminated=np.asarray(terminated, bool),
        truncated=np.asarray(truncated, bool),
        game_variables=np.asarray(variables, np.float32),
        game_variable_names=GAME_VARIABLE_NAMES,
        scenario=job["scenario"],
        seed=game_seed,
    )
    path = os.path.join(job["out"], episode_file(job["index"]))
    write_episode(path, episode)
    return _entry(path, job["index"], episode)


def record_episode_file(job: dict) -> tuple[dict, bytes]:
    """:func:`record_episode` into a private temporary folder: its manifest entry and the file's bytes.

    For workers that need not share the recording's filesystem (an executor's, e.g. on a Ray cluster):
    the caller writes the bytes where they belong.
    """
    with tempfile.TemporaryDirectory(prefix="wham-gym-record-") as tmp:
        entry = record_episode({**job, "out": tmp}, report=lambda n: None)
        with open(os.path.join(tmp, entry["file"]), "rb") as f:
            return entry, f.read()


def _entry(path: str, index: int, episode: Episode) -> dict:
    return {
        "file": os.path.basename(path),
        "index": index,
        "seed": episode.seed,
        "frames": len(episode),
        "return": float(episode.rewards.sum()) if episode.rewards is not None else None,
        "terminated": bool(episode.terminated[-1]) if episode.terminated is not None else None,
        "truncated": bool(episode.truncated[-1]) if episode.truncated is not None else None,
        "bytes": os.path.getsize(path),
        "sha256": sha256(path),
    }


# -- the whole recording ----------------------------------------------------------


def _load_manifest(out: str, settings: dict) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return {"format": MANIFEST_FORMAT, **settings, "episodes": []}
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc}); move it away to rebuild it from the episodes") from exc
    clash = {k: (manifest.get(k), settings[k]) for k in RESUME_KEYS if manifest.get(k) != settings[k]}
    if clash:
        detail = ", ".join(f"{k}: folder has {old!r}, asked {new!r}" for k, (old, new) in clash.items())
        raise ValueError(f"{out} holds a recording with other settings ({detail}); use a new --out or the same settings")
    return manifest


def _manifest_with(manifest: dict, entries: dict[int, dict], episodes: int) -> dict:
    done = [entries[i] for i in sorted(entries)]
    return {
        **manifest,
        "episodes_requested": max(episodes, manifest.get("episodes_requested", 0)),
        "episodes": done,
        "total_episodes": len(done),
        "total_frames": sum(e["frames"] for e in done),
        "total_bytes": sum(e["bytes"] for e in done),
    }


def record(
    out: str,
    scenario: str | None = None,
    episodes: int = 1,
    policy: str | Callable[..., Any] = "explore",
    workers: int = 1,
    max_steps: int | None = None,
    seed: int = 0,
    env_kwargs: dict | None = None,
    progress: bool = True,
    executor=None,
) -> dict:
    """Record ``episodes`` episodes into ``out`` with ``workers`` processes; returns the manifest.

    Episodes already complete in ``out`` are kept as they are; leftover temp files
    from an interrupted run are removed. ``workers=1`` records in this process.
    ``executor``: a ``concurrent.futures.Executor`` to record on instead (e.g.
    ``wham_gym.cluster.RayExecutor()`` on a Ray cluster); its workers send each episode
    file back to be written here, so they need not share this filesystem. The files are
    the same bytes whoever records them.

    ``policy``: a data-collection policy by name (:data:`~wham_gym.games.explore.POLICIES`), or a maker
    ``policy(seed=...) -> obj`` of objects with ``act(frame, info) -> controller vector`` and ``reset(seed)``
    (e.g. a trained agent, for the iterative loop: record with the agent, retrain the world model). A maker
    carries a ``name`` attribute, which the manifest records; it must be picklable for ``workers > 1``.
    """

    scenario = scenario or DEFAULT_SCENARIO
    factory = None
    if callable(policy):
        factory, policy = policy, getattr(policy, "name", None)
        if not isinstance(policy, str) or not policy or policy in POLICIES:
            raise ValueError("a policy maker needs a `name` attribute (a string, not one of the named policies) "
                             f"for the manifest, got {policy!r}")
    elif policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if episodes < 0 or workers < 1:
        raise ValueError(f"need episodes >= 0 and workers >= 1, got episodes={episodes}, workers={workers}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    env_kwargs = dict(env_kwargs or {})
    settings = {
        "scenario": scenario,
        "policy": policy,
        "base_seed": int(seed),
        "max_steps": max_steps,
        "env_kwargs": env_kwargs,
        "frame_skip": list(env_kwargs.get("frame_skip", FRAME_SKIP)),
        "fps": 10,
    }
    settings = json.loads(json.dumps(settings))  # compare as JSON stores it (tuples become lists)
    manifest = _load_manifest(out, settings)
    manifest_path = os.path.join(out, MANIFEST)

    for name in os.listdir(out):  # an interrupted write leaves only a temp file behind
        if name.endswith(".tmp") and name.startswith(("episode_", MANIFEST)):
            os.remove(os.path.join(out, name))
    known = {e["index"]: e for e in manifest["episodes"] if os.path.exists(os.path.join(out, e["file"]))}
    entries: dict[int, dict] = {}
    todo = []
    for index in range(episodes):
        path = os.path.join(out, episode_file(index))
        if index in known and is_complete(path) and os.path.getsize(path) == known[index]["bytes"]:
            entries[index] = known[index]
        elif index not in known and is_complete(path):  # finished just before the manifest update
            entries[index] = _entry(path, index, read_episode(path))
        else:
            todo.append({"out": out, "index": index, "scenario": scenario, "policy": policy, "factory": factory,
                         "base_seed": int(seed), "max_steps": max_steps, "env_kwargs": env_kwargs})
    for index, entry in known.items():  # keep episodes beyond this run's count
        entries.setdefault(index, entry)
    write_json_atomic(manifest_path, _manifest_with(manifest, entries, episodes))

    bar = _progress_bar(progress, len(todo), len(entries))
    start = time.perf_counter()
    frames = 0

    def finished(entry: dict) -> None:
        nonlocal frames
        entries[entry["index"]] = entry
        frames += entry["frames"]
        write_json_atomic(manifest_path, _manifest_with(manifest, entries, episodes))
        if bar is not None:
            bar.set_postfix(episodes=f"{len(entries)}/{episodes}")

    try:
        if executor is not None:
            _record_on(executor, todo, out, bar, finished)
        elif workers == 1 or len(todo) <= 1:
            for job in todo:
                finished(record_episode(job, report=bar.update if bar is not None else (lambda n: None)))
        else:
            _record_parallel(todo, min(workers, len(todo)), bar, finished)
    finally:
        if bar is not None:
            bar.close()
        for env in _ENVS.values():
            env.close()
        _ENVS.clear()

    seconds = time.perf_counter() - start
    result = _manifest_with(manifest, entries, episodes)
    result["last_run"] = {"frames": frames, "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1) if seconds else None, "workers": workers}
    write_json_atomic(manifest_path, result)
    return result


def _progress_bar(enabled: bool, todo: int, done: int):
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(unit="frame", unit_scale=True, dynamic_ncols=True, desc=f"recording {todo} episodes")
    bar.set_postfix(episodes=f"{done} done")
    return bar


def _record_parallel(todo: list[dict], workers: int, bar, finished: Callable[[dict], None]) -> None:
    # spawn: a fresh interpreter per worker; forking a process that runs games and torch is unsafe.
    ctx = mp.get_context("spawn")
    progress = ctx.Queue()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(progress,)) as pool:
        pending = {pool.submit(record_episode, job) for job in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress, bar)
                for future in done:
                    finished(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        _drain(progress, bar)


def _record_on(executor, todo: list[dict], out: str, bar, finished: Callable[[dict], None]) -> None:
    pending = {executor.submit(record_episode_file, job) for job in todo}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                entry, data = future.result()
                atomic_write(os.path.join(out, entry["file"]), lambda f, data=data: f.write(data))
                if bar is not None:
                    bar.update(entry["frames"])
                finished(entry)
    except BaseException:
        for future in pending:
            future.cancel()
        raise


def _drain(progress, bar) -> None:
    while True:
        try:
            n = progress.get_nowait()
        except queue_module.Empty:
            return
        if bar is not None:
            bar.update(n)
