"""One thread that keeps a DreamEngine busy: every due stream's next step joins the next batch.

Each round picks a batch from the streams with a step due (oldest first) and hands it to a stepper
(:mod:`.worker`: in this process, or in a child process with a GIL of its own), which loads the windows
into an engine of exactly that many slots, restores each stream's random-stream counter and steps once;
then every stream gets its frame. The engine re-prefills each window every step anyway (WHAM's exact
procedure), so loading windows afresh each round costs nothing extra and lets any mix of streams share
a step. A stream's tokens depend only on its prompt, actions, settings and seed, never on which other
streams shared its batches (the engine's slots are independent and each stream keeps its own draw
counter), so a served dream equals a local engine's for the same seed.

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

import numpy as np

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


class Scheduler:
    """The dream loop: ``start()`` runs it in a daemon thread, ``stop()`` ends it and joins."""

    def __init__(self, stepper, registry: Registry, *, max_batch: int = 32, rule: str = "all",
                 sweep_every: float = 1.0, tokens_per_image: int):
        if rule not in RULES:
            raise ValueError(f"batching rule: expected one of {RULES}, got {rule!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.stepper, self.registry, self.rule = stepper, registry, rule  # stepper: worker.LocalStepper or
        self.max_batch = min(max_batch, RELEASE_MAX_BATCH) if rule == "release" else max_batch  # ProcessStepper
        self.tokens_per_image = tokens_per_image
        self.sweep_every = sweep_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # the last failed step, reported by GET /stats
        self.stepping = False  # a batch is being dreamt now (GET /stats)

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
        self.stepper.close()

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
            self.stepping = True
            try:
                out = self.stepper.step(inputs, batch[0].sampling.engine_kwargs(),
                                        any(isinstance(s, Session) for s in batch))
            except Exception as exc:  # noqa: BLE001 - the loop must survive; the streams get the error
                self.error = exc
                out = None
            self.stepping = False
            with reg.lock:
                self._apply(batch, out)

    @staticmethod
    def _inputs(s) -> dict:
        """A consistent copy of what a step needs (taken under the lock; the step runs without it)."""
        return {"tokens": np.stack(s.tokens), "actions": np.stack(s.actions), "seed": s.seed, "draws": s.draws,
                "predict": s.wants_prediction}

    def _apply(self, batch: list, out: dict | None) -> None:
        """Hand each stream its step (under the lock); streams cancelled meanwhile get nothing."""
        now = time.monotonic()
        tpi = self.tokens_per_image
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
