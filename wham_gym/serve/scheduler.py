"""One thread that keeps a DreamEngine busy: every due stream's next step joins the next batch.

Each round picks a batch from the streams with a step due (oldest first), loads their windows
into an engine of exactly that many slots (``DreamEngine.reset`` with tokens: windows of
different lengths batch together), restores each stream's random-stream counter, steps once and
hands every stream its frame. The engine re-prefills each window every step anyway (WHAM's exact
procedure), so loading windows afresh each round costs nothing extra and lets any mix of streams
share a step. A stream's tokens depend only on its prompt, actions, settings and seed, never on
which other streams shared its batches (the engine's slots are independent and each stream keeps
its own draw counter), so a served dream equals a local engine's for the same seed.

Sampling settings are per engine, so a batch holds streams with equal settings: the group of the
oldest due stream, filled up to ``max_batch`` from the other due streams with its settings, oldest
first. Nobody starves: the oldest due stream is always in the next batch, and a stream that just
stepped goes to the back of the queue. We group rather than extend the engine to per-slot
settings because clients nearly always share settings (the release's defaults) and grouping
keeps the engine's tested exactness untouched.

``rule="release"`` reproduces the release's batching for comparison: at most 3 streams, and the
batch ends at the first due stream whose settings differ.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
import torch

from ..engine import DreamEngine
from ..rewards import StepContext, TokenRewardModel
from .sessions import Job, Registry, Session

RULES = ("all", "release")
RELEASE_MAX_BATCH = 3


def pick_batch(due: list, max_batch: int, rule: str = "all") -> list:
    """Streams for the next step from ``due`` (oldest first): the oldest one's settings group."""
    if not due:
        return []
    settings = due[0].sampling
    if rule == "release":
        batch = []
        for s in due[:RELEASE_MAX_BATCH]:
            if s.sampling != settings:
                break
            batch.append(s)
        return batch
    return [s for s in due if s.sampling == settings][:max_batch]


class EnginePool:
    """Engines by slot count sharing one model; the least recently used go once slots exceed ``max_slots``."""

    def __init__(self, model, max_slots: int):
        self.model, self.max_slots = model, max_slots
        self.engines: OrderedDict[int, DreamEngine] = OrderedDict()

    def get(self, n: int) -> DreamEngine:
        engine = self.engines.pop(n, None) or DreamEngine(self.model, n)
        self.engines[n] = engine
        while sum(self.engines) > self.max_slots and len(self.engines) > 1:
            self.engines.popitem(last=False)
        return engine


class Scheduler:
    """The dream loop: ``start()`` runs it in a daemon thread, ``stop()`` ends it and joins."""

    def __init__(self, model, registry: Registry, *, max_batch: int = 32, rule: str = "all",
                 sweep_every: float = 1.0):
        if rule not in RULES:
            raise ValueError(f"batching rule: expected one of {RULES}, got {rule!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.registry, self.rule = model, registry, rule
        self.max_batch = min(max_batch, RELEASE_MAX_BATCH) if rule == "release" else max_batch
        self.pool = EnginePool(model, self.max_batch)  # one engine at a time: its KV cache is the memory that grows with B
        reward_net = getattr(model, "reward_model", None)
        self.rewards = TokenRewardModel(reward_net) if reward_net is not None else None
        self.sweep_every = sweep_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # a crash of the loop, reported by GET /stats

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wham-gym-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with self.registry.work:
            self.registry.work.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        reg, last_sweep = self.registry, 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_sweep >= self.sweep_every:
                reg.expire(now)
                last_sweep = now
            with reg.work:
                batch = pick_batch(reg.due(), self.max_batch, self.rule)
                if not batch:
                    reg.work.wait(self.sweep_every)
                    continue
                inputs = [self._inputs(s) for s in batch]
                for s in batch:
                    s.running = True
            try:
                out = self.step(batch, inputs)
            except Exception as exc:  # noqa: BLE001 - the loop must survive; the streams get the error
                self.error = exc
                out = None
            with reg.lock:
                self._apply(batch, out)

    @staticmethod
    def _inputs(s) -> dict:
        """A consistent copy of what a step needs (taken under the lock; the step runs without it)."""
        return {"tokens": np.stack(s.tokens), "actions": np.stack(s.actions), "seed": s.seed, "draws": s.draws,
                "predict": s.wants_prediction}

    @torch.no_grad()
    def step(self, batch: list, inputs: list[dict]) -> dict:
        """One engine step for these streams -> new tokens, frames, predicted actions, rewards (numpy)."""
        n = len(batch)
        engine = self.pool.get(n)
        engine.sampling = batch[0].sampling.engine_kwargs()  # one settings group per batch (pick_batch)
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
        if self.rewards is not None and any(isinstance(s, Session) for s in batch):
            ctx = StepContext(tokens=r.tokens, prev_tokens=prev, frames=None, actions=actions,
                              steps=torch.ones(n, dtype=torch.long), nll=r.nll, entropy=r.entropy)
            reward, p_end = self.rewards.predict(ctx)
            out["reward"] = reward.float().cpu().numpy()
            out["terminated"] = (p_end >= self.rewards.termination_threshold).cpu().numpy()
        return out

    def _apply(self, batch: list, out: dict | None) -> None:
        """Hand each stream its step (under the lock); streams cancelled meanwhile get nothing."""
        now = time.monotonic()
        tpi = self.model.config.tokens_per_image
        if out is not None:
            self.registry.stats["batches"] += 1
            self.registry.stats["stream_steps"] += len(batch)
        for i, s in enumerate(batch):
            s.running = False
            s.ready_since = now
            if out is None:
                if isinstance(s, Session) and s.on_step is not None:
                    s.on_step(RuntimeError(f"the dream step failed: {self.error!r}"))
                    s.on_step = None
                elif isinstance(s, Job) and s.alive:
                    self.registry.retire(s, "failed")
                continue
            s.draws += tpi + (16 if s.wants_prediction else 0)  # as a lone local engine would count
            if not s.alive:
                continue
            tokens, frame = out["tokens"][i], out["frames"][i]
            step = s.steps_done
            s.steps_done += 1
            if isinstance(s, Job):
                fut = s.future_actions
                action = fut[step] if step < len(fut) else out["predicted"][i]
                s.results.append((s.id, step, frame, action, tokens))
                s.push(tokens, action)
            else:
                s.episode_steps += 1
                s.push(tokens, np.zeros_like(s.actions[-1]))  # the agent's next action replaces it
                result = {"tokens": tokens, "frame": frame, "step": s.episode_steps,
                          "reward": None if out["reward"] is None else float(out["reward"][i]),
                          "terminated": None if out["terminated"] is None else bool(out["terminated"][i])}
                callback, s.on_step = s.on_step, None
                s.ready_since = float("inf")
                callback(result)
