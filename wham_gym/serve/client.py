"""Clients of a dream server: the release's job protocol (:class:`DreamClient`) and a remote RL env (:class:`RemoteWHAMEnv`).

Both speak HTTP through httpx only; neither needs the server's dependencies. ::

    client = DreamClient("http://127.0.0.1:5000")
    ids = client.new_job(frames, actions, num_steps=5)          # frames: uint8 (H, W, 3) each
    dreams = client.wait(ids)                                   # {job_id: [{frame, tokens, action, ...}, ...]}

    env = RemoteWHAMEnv("http://127.0.0.1:5000", max_episode_steps=100)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile

import gymnasium as gym
import httpx
import numpy as np
from PIL import Image

from .. import controller

PREDICTIONS_FILE = "predictions.json"


class ServerError(RuntimeError):
    """The server refused a request; the message is the server's own (what was expected and how to fix it)."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: "
                         f"{response.text}")
        self.status = response.status_code


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise ServerError(response)
    return response


def png_bytes(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def read_results_zip(data: bytes) -> list[dict]:
    """A ``get_job_results`` zip -> its predictions, each with its ``frame`` decoded (uint8 (H, W, 3))."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        predictions = json.loads(z.read(PREDICTIONS_FILE))
        for p in predictions:
            p["frame"] = np.asarray(Image.open(io.BytesIO(z.read(p["image_filename"]))).convert("RGB"))
    return predictions


class DreamClient:
    """The release's job protocol: ``new_job``, ``get_job_results``, ``cancel_job``."""

    def __init__(self, url: str, timeout: float = 120.0):
        self.http = httpx.Client(base_url=url, timeout=timeout)

    def details(self) -> dict:
        return _check(self.http.get("/")).json()

    def stats(self) -> dict:
        return _check(self.http.get("/stats")).json()

    def new_job(self, frames, actions, num_steps: int, *, tokens=None, future_actions=None, **settings) -> list[str]:
        """Queue a dream of ``num_steps`` from a prompt of P frames and the P actions taken at them.

        ``settings``: temperature, top_k, top_p, max_context_length, num_parallel_predictions, seed.
        """
        if len(frames) != len(actions):
            raise ValueError(f"a prompt needs one action per frame: {len(frames)} frames, {len(actions)} actions")
        steps, files = [], []
        for i, (frame, action) in enumerate(zip(frames, actions)):
            name = f"step_{i}.png"
            steps.append({"image_name": name, "action": [float(a) for a in action],
                          "tokens": [] if tokens is None else [int(t) for t in tokens[i]]})
            files.append((name, (name, png_bytes(frame), "image/png")))
        body = {"num_steps_to_predict": num_steps, "steps": steps, **settings}
        if future_actions is not None:
            body["future_actions"] = [{"action": [float(a) for a in f]} for f in future_actions]
        r = _check(self.http.post("/new_job", data={"json": json.dumps(body)}, files=files))
        return r.json()["job_ids"]

    def poll(self, job_ids) -> list[dict]:
        """New results of these jobs (each handed out once); [] when there are none yet."""
        r = _check(self.http.get("/get_job_results", params={"job_ids": list(job_ids)}))
        return [] if r.status_code == 204 else read_results_zip(r.content)

    def wait(self, job_ids, num_steps: int | None = None, interval: float = 0.05, timeout: float = 600.0) -> dict:
        """Poll until every job has ``num_steps`` results (default: the server's max_dream_steps_per_job);
        returns {job_id: results in step order}."""
        job_ids = list(job_ids)
        want = num_steps if num_steps is not None else self.details()["max_dream_steps_per_job"]
        got = {j: [] for j in job_ids}
        deadline = time.monotonic() + timeout
        while any(len(v) < want for v in got.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs unfinished after {timeout} s: {[j for j, v in got.items() if len(v) < want]}")
            new = self.poll([j for j, v in got.items() if len(v) < want])
            for p in new:
                got[p["job_id"]].append(p)
            if not new:
                time.sleep(interval)
        return {j: sorted(v, key=lambda p: p["dream_step_index"]) for j, v in got.items()}

    def cancel(self, job_id: str) -> None:
        _check(self.http.get("/cancel_job", params={"job_id": job_id}))

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _frame(payload: dict) -> np.ndarray:
    if "frame_raw" in payload:
        return np.frombuffer(base64.b64decode(payload["frame_raw"]), np.uint8).reshape(payload["frame_shape"])
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload["frame_png"]))).convert("RGB"))


class RemoteWHAMEnv(gym.Env):
    """A Gymnasium env whose dreams run on a wham-gym dream server (one session per env).

    Observations are uint8 frames (H, W, 3); actions the 16-dim controller Box, clipped to it here
    (the server refuses out-of-range values). Reward and termination are the server model's learned
    ones when it ships them, else 0 and never. ``settings`` (temperature, top_k, top_p,
    max_context_length) are fixed for the session. ``reset(seed=...)`` draws the prompt from the
    server model's prompt bank with that seed; ``options={"prompt": (frames, actions)}`` uploads one.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, url: str, max_episode_steps: int | None = None, frame_size=(180, 300), timeout: float = 300.0,
                 **settings):
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.settings, self.max_episode_steps = settings, max_episode_steps
        self.observation_space = gym.spaces.Box(0, 255, (*frame_size, 3), np.uint8)
        self.action_space = controller.action_space()
        self.session_id = None
        self._steps, self._last = 0, None
        self.render_mode = "rgb_array"

    def _prompt_request(self, seed, options):
        prompt = (options or {}).get("prompt")
        body = dict(self.settings)
        if seed is not None:
            body["seed"] = int(seed)
        if prompt is None:
            return {"json": body}
        frames, actions = prompt
        actions = list(actions) + [np.zeros(16, np.float32)] * (len(frames) - len(actions))  # P-1 given: pad
        body["steps"] = [{"image_name": f"f{i}.png", "action": [float(x) for x in a], "tokens": []}
                         for i, a in enumerate(actions)]
        files = [(f"f{i}.png", (f"f{i}.png", png_bytes(f), "image/png")) for i, f in enumerate(frames)]
        return {"data": {"json": json.dumps(body)}, "files": files}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        path = "/sessions" if self.session_id is None else f"/sessions/{self.session_id}/reset"
        r = _check(self.http.post(path, params={"frame": "raw"}, **self._prompt_request(seed, options))).json()
        self.session_id = r["session_id"]
        self._steps, self._last = 0, _frame(r)
        return self._last, {"tokens": np.asarray(r["tokens"])}

    def step(self, action):
        if self.session_id is None:
            raise RuntimeError("call reset() before step()")
        a = controller.clip_actions(np.asarray(action, np.float32).reshape(controller.ACTION_DIM))
        controller.validate_actions(a, "action")
        r = _check(self.http.post(f"/sessions/{self.session_id}/step", params={"frame": "raw"},
                                  json={"action": [float(x) for x in a]})).json()
        self._steps += 1
        self._last = _frame(r)
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"tokens": np.asarray(r["tokens"]), "learned_reward": r["reward"] is not None}
        return self._last, float(r["reward"] or 0.0), bool(r["terminated"]), truncated, info

    def render(self):
        return self._last

    def close(self):
        if self.session_id is not None:
            try:
                self.http.delete(f"/sessions/{self.session_id}")
            except httpx.HTTPError:
                pass  # the server is gone: nothing to close there
            self.session_id = None
        self.http.close()
