"""How a batch of streams is dreamt one step: in this process (:class:`LocalStepper`) or in a child (:class:`ProcessStepper`).

A stepper takes plain inputs (each stream's window tokens and actions, seed, draw counter, whether it
wants the model's next action) and one settings group, and returns numpy outputs. It loads the windows
into an engine of exactly that many slots (``DreamEngine.reset`` with tokens: windows of different
lengths batch together), restores each stream's draw counter, and steps once.

Why a child process: the engine's decode loop makes thousands of small torch calls per step, each
taking and dropping the GIL. In the server's process the HTTP event loop holds the GIL between them,
and under many polling clients every call waits for it (measured: a 4-slot step 1.7x slower next to a
thread busy 30 % of the time). A child process has a GIL of its own; it gets its inputs over a pipe
(a few MB a step) and loads the model itself by name, so the parent never ships weights.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import OrderedDict

import numpy as np
import torch

from ..engine import DreamEngine
from ..memory import release_free_memory
from ..model import load_model
from ..rewards import StepContext, TokenRewardModel

WORKER_START_TIMEOUT = 300  # seconds for the child to import torch and load the model


class EnginePool:
    """Engines by slot count sharing one model; the least recently used go once slots exceed ``max_slots``."""

    def __init__(self, model, max_slots: int):
        self.model, self.max_slots = model, max_slots
        self.engines: OrderedDict[int, DreamEngine] = OrderedDict()

    def get(self, n: int) -> DreamEngine:
        engine = self.engines.pop(n, None)
        if engine is None:
            if self.engines and sum(self.engines) + n > self.max_slots:
                while self.engines and sum(self.engines) + n > self.max_slots:
                    self.engines.popitem(last=False)  # before building the new one: a lower peak
                # The dropped engines' KV caches (~30 MB a layer and tensor at 27 slots) are freed into the
                # heap, which keeps them mapped (wham_gym/memory.py): without this the worker's RSS crept up as
                # batch sizes changed (+14 % over 10,000 requests in one load test).
                release_free_memory()
            engine = DreamEngine(self.model, n)
        self.engines[n] = engine
        return engine


class LocalStepper:
    """Steps batches with an engine pool in this process."""

    def __init__(self, model, max_batch: int):
        self.model = model
        self.pool = EnginePool(model, max_batch)  # one engine at a time: its KV cache is what grows with B
        reward_net = getattr(model, "reward_model", None)
        self.rewards = TokenRewardModel(reward_net) if reward_net is not None else None

    @torch.no_grad()
    def step(self, inputs: list[dict], sampling: dict, want_rewards: bool) -> dict:
        """One engine step for these streams -> new tokens, frames, predicted actions, rewards (numpy)."""
        n = len(inputs)
        engine = self.pool.get(n)
        engine.sampling = dict(sampling)  # one settings group per batch (scheduler.pick_batch)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_length.setdefault(len(x["tokens"]), []).append(i)
        for P, rows in by_length.items():  # reset takes one prompt length per call
            toks = torch.from_numpy(np.stack([inputs[i]["tokens"] for i in rows]))
            acts = torch.from_numpy(np.stack([inputs[i]["actions"][:-1] for i in rows])) if P > 1 else None
            seeds = torch.tensor([inputs[i]["seed"] for i in rows])
            engine.reset(env_ids=rows, tokens=toks, actions=acts, seeds=seeds)
        engine.draws = torch.tensor([x["draws"] for x in inputs], device=engine.device)
        actions = torch.from_numpy(np.stack([x["actions"][-1] for x in inputs]))
        predict = any(x["predict"] for x in inputs)
        prev = engine.images[:, -1].clone()
        r = engine.step(actions, predict_actions=predict)
        out = {"tokens": r.tokens.cpu().numpy(), "frames": r.frames.cpu().numpy(),
               "predicted": r.predicted_actions.cpu().numpy() if predict else None,
               "reward": None, "terminated": None}
        if self.rewards is not None and want_rewards:
            ctx = StepContext(tokens=r.tokens, prev_tokens=prev, frames=None, actions=actions.to(engine.device),
                              steps=torch.ones(n, dtype=torch.long), nll=r.nll, entropy=r.entropy,
                              uniform=engine.signal_uniforms())
            out["reward"] = self.rewards.reward(ctx).cpu().numpy()
            out["terminated"] = self.rewards.termination(ctx).cpu().numpy()  # sampled, for a hazard model
        return out

    def close(self) -> None:
        self.pool.engines.clear()


def _child(conn, spec, device, max_batch: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    try:
        stepper = LocalStepper(load_model(spec, device=device), max_batch)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"loading model {spec!r}: {exc!r}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent went away
            return
        if msg is None:
            return
        try:
            conn.send(("ok", stepper.step(*msg)))
        except Exception as exc:  # noqa: BLE001 - one bad batch must not end the worker
            conn.send(("error", repr(exc)))


class ProcessStepper:
    """Steps batches in a child process (spawned: safe next to the server's threads) that loads ``spec`` itself."""

    def __init__(self, spec, max_batch: int, device=None, threads: int | None = None):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child, spec, device, max_batch, threads),
                                name="wham-gym-dream-worker", daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(WORKER_START_TIMEOUT):
            self.close()
            raise RuntimeError(f"the dream worker did not start within {WORKER_START_TIMEOUT} s")
        kind, detail = self.conn.recv()
        if kind != "ready":
            self.close()
            raise RuntimeError(f"the dream worker failed to start: {detail}")

    def step(self, inputs: list[dict], sampling: dict, want_rewards: bool) -> dict:
        try:
            self.conn.send((inputs, sampling, want_rewards))
            kind, out = self.conn.recv()  # waits without the GIL
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"the dream worker died (exit code {self.proc.exitcode})") from exc
        if kind != "ok":
            raise RuntimeError(f"the dream worker failed: {out}")
        return out

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        self.conn.close()
