"""Who is dreaming what: protocol jobs and RL sessions as *streams*, and the table that holds them.

A stream is one dream in progress: its window (the newest frames as tokens, the action
taken at each), its sampling settings, its random stream (seed + draws used), and the
action for its next step. The scheduler steps streams; it never needs to know whether a
stream is a job (steps on its own until done, results polled) or a session (steps when an
agent sends an action, answered at once).

Every mutation happens under :attr:`Registry.lock`; the scheduler takes the lock only to pick
a batch and to hand back its results, never while the model runs.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .protocol import BadRequest, Sampling

RETIRED_MEMORY = 10_000  # ids of finished/cancelled/expired streams remembered, so late polls get a clear answer


@dataclass(eq=False)
class Stream:
    id: str
    sampling: Sampling
    context: int  # frames kept in the window
    seed: int
    tokens: list  # window: int64 (tokens_per_image,) per frame, oldest first
    actions: list  # float32 (16,) per frame: the action taken at it (the last one: the next step's)
    draws: int = 0  # uniforms of the seed's stream used so far (the engine's per-slot counter)
    steps_done: int = 0
    ready_since: float = 0.0  # when its next step became due (FIFO order); inf when nothing is due
    running: bool = False  # in the batch being computed now
    alive: bool = True
    last_seen: float = field(default_factory=time.monotonic)
    wants_prediction: bool = False  # whether a step must also sample the model's next action

    def push(self, tokens: np.ndarray, next_action: np.ndarray) -> None:
        """Append a dreamt frame and the action to be taken at it; drop the oldest beyond the context."""
        self.tokens.append(tokens)
        self.actions.append(next_action)
        del self.tokens[: -self.context], self.actions[: -self.context]


@dataclass(eq=False)
class Job(Stream):
    """A ``new_job`` dream: runs ``num_steps`` on its own; its results wait to be polled."""

    num_steps: int = 0
    future_actions: np.ndarray | None = None
    results: list = field(default_factory=list)  # (job_id, step, frame, action, tokens)

    @property
    def finished(self) -> bool:
        return self.steps_done >= self.num_steps


@dataclass(eq=False)
class Session(Stream):
    """A remote RL env: one step per agent action; the waiting request is woken through ``on_step``."""

    on_step: object = None  # callable(result dict | Exception), set while a step is pending
    episode_steps: int = 0


class Registry:
    """Jobs and sessions by id, with the server's limits, expiry and statistics."""

    def __init__(self, *, max_jobs: int, lifespan: float, max_sessions: int, seed: int | None = None):
        self.max_jobs, self.lifespan, self.max_sessions = max_jobs, float(lifespan), max_sessions
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # notified when a stream becomes due
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, Session] = {}
        self.retired: OrderedDict[str, str] = OrderedDict()  # id -> finished, cancelled, expired, closed, failed
        self._seeds = itertools.count(0 if seed is None else int(seed) * 1_000_003)
        self._random_seeds = seed is None
        self.stats = {"batches": 0, "stream_steps": 0, "jobs": 0, "sessions": 0, "expired": 0, "cancelled": 0}

    def next_seed(self) -> int:
        if self._random_seeds:
            return int.from_bytes(uuid.uuid4().bytes[:7], "little")
        return next(self._seeds)

    # ------------------------------------------------------------------ jobs
    def add_jobs(self, jobs: list[Job]) -> int:
        """Queue jobs atomically (all or none); returns how many jobs are live after."""
        with self.lock:
            live = sum(not j.finished for j in self.jobs.values())
            if live + len(jobs) > self.max_jobs:
                raise BadRequest(f"Too many jobs already running: {live} running, {len(jobs)} asked for, "
                                 f"max {self.max_jobs} (max_concurrent_jobs); poll or cancel jobs, then retry")
            now = time.monotonic()
            for job in jobs:
                job.ready_since = job.last_seen = now
                self.jobs[job.id] = job
            self.stats["jobs"] += len(jobs)
            self.work.notify()
            return live + len(jobs)

    def _check_known(self, ids, table: dict, what: str) -> None:
        unknown = [i for i in ids if i not in table and i not in self.retired]
        if unknown:
            raise BadRequest(f"unknown {what} id(s) {unknown[:5]}: never issued by this server (or forgotten); "
                             f"use the ids the server returned", status=404)
        expired = [i for i in ids if self.retired.get(i) == "expired"]
        if expired:
            raise BadRequest(f"{what} id(s) {expired[:5]} expired: not polled for {self.lifespan:g} s "
                             "(max_job_lifespan); submit them again", status=410)
        failed = [i for i in ids if self.retired.get(i) == "failed"]
        if failed:
            raise BadRequest(f"{what} id(s) {failed[:5]} failed: the server could not dream them (see GET /stats); "
                             "submit them again", status=500)

    def pop_results(self, ids: list[str]) -> list:
        """Every new result of these jobs, handed out once; the ids are checked before anything is taken."""
        with self.lock:
            self._check_known(ids, self.jobs, "job")
            now, out = time.monotonic(), []
            for i in dict.fromkeys(ids):  # a repeated id is served once
                job = self.jobs.get(i)
                if job is None:
                    continue
                job.last_seen = now
                out += job.results
                job.results = []
                if job.finished:
                    self._retire(self.jobs, i, "finished")
            return out

    def cancel(self, job_id: str) -> None:
        with self.lock:
            self._check_known([job_id], self.jobs, "job")
            job = self.jobs.get(job_id)
            if job is not None:
                self._retire(self.jobs, job_id, "cancelled")
                self.stats["cancelled"] += 1

    # ------------------------------------------------------------------ sessions
    def add_session(self, session: Session) -> None:
        with self.lock:
            if len(self.sessions) >= self.max_sessions:
                raise BadRequest(f"Too many sessions open: max {self.max_sessions}; close one "
                                 "(DELETE /sessions/{id}) and retry", status=429)
            session.ready_since = float("inf")
            self.sessions[session.id] = session
            self.stats["sessions"] += 1

    def session(self, session_id: str) -> Session:
        with self.lock:
            self._check_known([session_id], self.sessions, "session")
            s = self.sessions.get(session_id)
            if s is None:
                raise BadRequest(f"session {session_id} is {self.retired[session_id]}; create a new one", status=404)
            s.last_seen = time.monotonic()
            return s

    def request_step(self, session: Session, action: np.ndarray, on_step) -> None:
        with self.lock:
            if not session.alive:
                raise BadRequest(f"session {session.id} is closed; create a new one", status=404)
            if session.on_step is not None or session.running:
                raise BadRequest(f"session {session.id} is already stepping; wait for its answer before the "
                                 "next step", status=409)
            session.actions[-1] = action
            session.on_step = on_step
            session.ready_since = time.monotonic()
            self.work.notify()

    def replace_prompt(self, session: Session, tokens: list, actions: list, seed: int | None) -> None:
        with self.lock:
            if session.running or session.on_step is not None:
                raise BadRequest(f"session {session.id} is stepping; reset it after the step returns", status=409)
            session.tokens, session.actions = tokens, actions
            session.episode_steps = 0
            if seed is not None:
                session.seed, session.draws = seed, 0

    def close(self, session_id: str) -> None:
        with self.lock:
            self._check_known([session_id], self.sessions, "session")
            if session_id in self.sessions:
                self._retire(self.sessions, session_id, "closed")

    # ------------------------------------------------------------------ both
    def retire(self, stream: Stream, why: str) -> None:
        """Drop a live stream (the caller holds the lock)."""
        table = self.jobs if isinstance(stream, Job) else self.sessions
        if table.get(stream.id) is stream:
            self._retire(table, stream.id, why)

    def _retire(self, table: dict, stream_id: str, why: str) -> None:
        stream = table.pop(stream_id)
        stream.alive = False
        stream.results = [] if isinstance(stream, Job) else None
        if isinstance(stream, Session) and stream.on_step is not None:
            stream.on_step(BadRequest(f"session {stream_id} was {why} while stepping", status=410))
            stream.on_step = None
        self.retired[stream_id] = why
        while len(self.retired) > RETIRED_MEMORY:
            self.retired.popitem(last=False)

    def expire(self, now: float | None = None) -> int:
        """Drop jobs unpolled and sessions unused for ``lifespan`` seconds; returns how many."""
        now = time.monotonic() if now is None else now
        with self.lock:
            old = [(t, i) for t in (self.jobs, self.sessions) for i, s in t.items()
                   if now - s.last_seen > self.lifespan and not (isinstance(s, Session) and s.on_step)]
            for table, i in old:
                self._retire(table, i, "expired")
            self.stats["expired"] += len(old)
            return len(old)

    def due(self) -> list[Stream]:
        """Streams with a step due, oldest first (call under the lock)."""
        jobs = [j for j in self.jobs.values() if not j.finished and not j.running]
        sessions = [s for s in self.sessions.values() if s.on_step is not None and not s.running]
        return sorted(jobs + sessions, key=lambda s: s.ready_since)

    def snapshot(self) -> dict:
        with self.lock:
            return {**self.stats, "live_jobs": sum(not j.finished for j in self.jobs.values()),
                    "open_sessions": len(self.sessions),
                    "mean_batch_size": self.stats["stream_steps"] / max(1, self.stats["batches"])}
