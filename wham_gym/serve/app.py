"""The HTTP face of the dream server: WHAM's ``run_server.py`` routes plus remote RL sessions (Starlette).

Routes (the first four are the release's, byte-compatible; see :mod:`.protocol`):
  GET  /                         server details (model_file, max_concurrent_jobs, ...)
  POST /new_job                  multipart: field ``json`` + one PNG file part per prompt step
  GET  /get_job_results?job_ids  zip of new results, or 204 "No new responses"
  GET  /cancel_job?job_id        200 "OK"
  GET  /stats                    ours: batches, mean batch size, live jobs and sessions
  POST /sessions                 ours: open an RL session (JSON, or multipart like new_job); first observation
  POST /sessions/{id}/step       ours: {"action": [16 numbers]} -> frame, tokens, reward, terminated
  POST /sessions/{id}/reset      ours: a new prompt (same body as POST /sessions)
  DELETE /sessions/{id}          ours: close

Handlers never run the model: they validate, queue and read results, so a slow dream never
blocks a poll. Prompt images are decoded and tokenized in a worker thread (the tokenizer is
a stateless forward pass, safe next to the scheduler's thread). Every refusal is a 4xx whose
text says what was expected, what came and how to fix it; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..model import load_model
from ..prompts import default_prompt_bank
from .protocol import (BadRequest, JobSpec, encode_png, parse_action, parse_json_field, parse_new_job,
                       parse_sampling, parse_steps, results_zip)
from .scheduler import Scheduler
from .worker import LocalStepper, ProcessStepper
from .sessions import Job, Registry, Session

MAX_UPLOAD_BYTES = 32 * 2**20


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413), by Content-Length or as they stream in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await PlainTextResponse(self._message(int(length)), status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BadRequest(self._message(seen), status=413)
            return message

        await self.app(scope, limited, send)

    def _message(self, received: int) -> str:
        return (f"request body too large: received {received} bytes or more, the limit is {self.limit} "
                "(wham-gym serve --max-upload-mb); send fewer or smaller prompt images")


def _frame_payload(frame: np.ndarray, how: str) -> dict:
    if how == "png":
        return {"frame_png": base64.b64encode(encode_png(frame)).decode()}
    if how == "raw":
        return {"frame_raw": base64.b64encode(np.ascontiguousarray(frame).tobytes()).decode(),
                "frame_shape": list(frame.shape)}
    return {}


class DreamServer:
    """The model, the stream table, the scheduler, and the route handlers over them."""

    def __init__(self, model="default", *, model_name: str | None = None, device=None, max_concurrent_jobs: int = 30,
                 max_dream_steps_per_job: int = 10, max_job_lifespan: float = 600, max_batch: int = 32,
                 batching: str = "all", max_sessions: int = 256, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 seed: int | None = None, worker: str = "thread", threads: int | None = None):
        self.model_name = model_name or (model if isinstance(model, str) else getattr(model, "card", {}).get("name"))
        self.model = load_model(model, device=device) if not isinstance(model, torch.nn.Module) else model
        cfg = self.model.config
        self.size = (cfg.frame_height, cfg.frame_width)
        self.limits = {"max_concurrent_jobs": int(max_concurrent_jobs),
                       "max_dream_steps_per_job": int(max_dream_steps_per_job),
                       "max_job_lifespan": max_job_lifespan}
        self.max_upload_bytes = int(max_upload_bytes)
        self.registry = Registry(max_jobs=max_concurrent_jobs, lifespan=max_job_lifespan, max_sessions=max_sessions,
                                 seed=seed)
        if worker not in ("thread", "process"):
            raise ValueError(f"worker: expected 'thread' or 'process', got {worker!r}")
        if worker == "process" and not isinstance(model, (str, os.PathLike)):
            raise ValueError("worker='process' loads the model by name in the child: pass a name or path, "
                             "not a model object (or use worker='thread')")
        self._stepper_args = (worker, model, device, threads)
        self.scheduler = None  # built when the app starts: a process worker lives as long as the server
        self._scheduler_args = dict(max_batch=max_batch, rule=batching, sweep_every=min(1.0, max_job_lifespan / 4),
                                    tokens_per_image=cfg.tokens_per_image)
        self._bank = None
        # The parent's model work (tokenizing prompts, decoding session observations) runs on one thread:
        # spread over the HTTP thread pool, 32 clients' uploads made 32 concurrent encodes, each thread
        # keeping its own malloc arena (measured: a 1.5 GB HTTP process under the load test).
        self._model_thread: ThreadPoolExecutor | None = None  # started with the app

    # ------------------------------------------------------------------ app
    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app):
            self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wham-gym-model")
            stepper = await run_in_threadpool(self._stepper)  # a process worker loads its model: seconds
            self.scheduler = Scheduler(stepper, self.registry, **self._scheduler_args)
            self.scheduler.start()
            try:
                yield
            finally:
                self.scheduler.stop()
                self._model_thread.shutdown(wait=True)

        async def bad_request(request, exc: BadRequest):
            return PlainTextResponse(str(exc), status_code=exc.status)

        async def http_error(request, exc: HTTPException):  # e.g. a malformed multipart body
            return PlainTextResponse(f"{exc.detail}; send a multipart/form-data body as the protocol describes",
                                     status_code=exc.status_code)

        routes = [
            Route("/", self.details, methods=["GET"]),
            Route("/stats", self.stats, methods=["GET"]),
            Route("/new_job", self.new_job, methods=["POST"]),
            Route("/get_job_results", self.get_job_results, methods=["GET"]),
            Route("/cancel_job", self.cancel_job, methods=["GET"]),
            Route("/sessions", self.create_session, methods=["POST"]),
            Route("/sessions/{sid}/step", self.session_step, methods=["POST"]),
            Route("/sessions/{sid}/reset", self.session_reset, methods=["POST"]),
            Route("/sessions/{sid}", self.close_session, methods=["DELETE"]),
        ]
        app = Starlette(routes=routes, lifespan=lifespan,
                        exception_handlers={BadRequest: bad_request, HTTPException: http_error})
        return BodyLimit(app, self.max_upload_bytes)

    async def _on_model_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, functools.partial(fn, *args))

    def _stepper(self):
        worker, spec, device, threads = self._stepper_args
        max_batch = self._scheduler_args["max_batch"]
        if worker == "process":
            return ProcessStepper(spec, max_batch, device=device, threads=threads)
        return LocalStepper(self.model, max_batch)

    # ------------------------------------------------------------------ the release's routes
    async def details(self, request: Request):
        return JSONResponse({"model_file": self.model_name, **self.limits})

    async def stats(self, request: Request):
        snap = self.registry.snapshot()
        snap["batching"], snap["max_batch"] = self.scheduler.rule, self.scheduler.max_batch
        snap["error"] = None if self.scheduler.error is None else repr(self.scheduler.error)
        snap["stepping"] = self.scheduler.stepping
        return JSONResponse(snap)

    async def _form(self, request: Request):
        """A multipart form's ``json`` field (parsed) and its file parts (name -> bytes)."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):  # as Flask's form
            raise BadRequest(f"expected a multipart/form-data body (field 'json' + PNG file parts), received "
                             f"content-type {ctype or 'none'!r}", status=415)
        try:
            form = await request.form(max_files=1000, max_fields=100, max_part_size=self.max_upload_bytes)
        except ClientDisconnect:  # nothing was queued; nothing to clean up
            raise
        try:
            files = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files[value.filename or key] = await value.read()
                    files.setdefault(key, files[value.filename or key])
            return parse_json_field(form.get("json")), files
        finally:
            await form.close()

    def _tokens(self, frames: list, tokens: list) -> list:
        """Prompt steps -> token arrays; frames are tokenized in one batch (runs in a worker thread)."""
        todo = [i for i, f in enumerate(frames) if f is not None]
        if todo:
            enc = self.model.encode_frames(np.stack([frames[i] for i in todo])).cpu().numpy()
            for j, i in enumerate(todo):
                tokens[i] = enc[j]
        return [np.asarray(t, np.int64) for t in tokens]

    async def new_job(self, request: Request):
        body, files = await self._form(request)
        cfg = self.model.config
        spec: JobSpec = await run_in_threadpool(
            parse_new_job, body, files, max_steps=self.limits["max_dream_steps_per_job"],
            max_jobs=self.limits["max_concurrent_jobs"], seq_len=cfg.seq_len,
            size=self.size, tokens_per_image=cfg.tokens_per_image, image_vocab=self.model.vocab.image_vocab_size)
        tokens = await self._on_model_thread(self._tokens, spec.frames, spec.tokens)
        base = spec.seed
        jobs = [Job(id=uuid.uuid4().hex, sampling=spec.sampling, context=spec.context,
                    seed=self.registry.next_seed() if base is None else base + i,
                    tokens=list(tokens), actions=list(spec.actions), wants_prediction=True,
                    num_steps=spec.num_steps, future_actions=spec.future_actions)
                for i in range(spec.num_parallel)]
        queued = self.registry.add_jobs(jobs)
        return JSONResponse({"job_ids": [j.id for j in jobs], "current_jobs_in_queue": queued})

    async def get_job_results(self, request: Request):
        ids = request.query_params.getlist("job_ids")
        if not ids:
            raise BadRequest("job_ids not in request: pass ?job_ids=<id>&job_ids=<id>... with ids from new_job")
        results = self.registry.pop_results(ids)
        if not results:
            return Response(status_code=204)  # "No new responses" (HTTP 204 carries no body)
        data = await run_in_threadpool(results_zip, results)
        return Response(data, media_type="application/zip",
                        headers={"content-disposition": 'attachment; filename="dreaming_results.zip"'})

    async def cancel_job(self, request: Request):
        job_id = request.query_params.get("job_id")
        if not job_id:
            raise BadRequest("job_id not in request: pass ?job_id=<id> with an id from new_job")
        self.registry.cancel(job_id)
        return PlainTextResponse("OK")

    # ------------------------------------------------------------------ RL sessions
    async def _session_prompt(self, request: Request):
        """A session's prompt and settings from JSON (drawn from the model's prompt bank) or multipart steps."""
        cfg = self.model.config
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            body, files = await self._form(request)
            frames, tokens, actions = await run_in_threadpool(
                parse_steps, body, files, size=self.size, tokens_per_image=cfg.tokens_per_image,
                image_vocab=self.model.vocab.image_vocab_size, wham_buttons=False, keep_last=cfg.seq_len - 1)
        else:
            raw = await request.body()
            body = parse_json_field(raw.decode("utf-8", "replace") if raw else "{}", "request body")
            frames = tokens = actions = None
        sampling, context = parse_sampling(body, cfg.seq_len)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise BadRequest(f"seed: expected a whole number >= 0, received {seed!r}")
        if frames is None:  # a prompt from the model's own bank, drawn with the seed
            frames, actions = await run_in_threadpool(self._bank_prompt, seed, context)
            tokens = [None] * len(frames)
        frames, tokens, actions = frames[-context:], tokens[-context:], actions[-context:]
        tokens = await self._on_model_thread(self._tokens, frames, tokens)
        return sampling, context, seed, tokens, list(actions)

    def _bank_prompt(self, seed, context):
        if self._bank is None:
            self._bank = default_prompt_bank(self.model)
        p = self._bank.sample(np.random.default_rng(seed), 1, context, size=self.size)[0]
        actions = np.concatenate([p.actions, np.zeros((1, 16), np.float32)])  # the last: the first step's
        return list(p.frames), actions.astype(np.float32)

    def _observation(self, tokens: np.ndarray, how: str) -> dict:
        frame = self.model.decode_tokens(torch.from_numpy(tokens[None])).cpu().numpy()[0]
        return {"tokens": tokens.tolist(), **_frame_payload(frame, how)}

    @staticmethod
    def _frame_mode(request: Request) -> str:
        how = request.query_params.get("frame", "png")
        if how not in ("png", "raw", "none"):
            raise BadRequest(f"frame: expected png, raw or none, received {how!r}")
        return how

    async def create_session(self, request: Request):
        how = self._frame_mode(request)
        sampling, context, seed, tokens, actions = await self._session_prompt(request)
        s = Session(id=uuid.uuid4().hex, sampling=sampling, context=context,
                    seed=self.registry.next_seed() if seed is None else seed, tokens=tokens, actions=actions)
        self.registry.add_session(s)
        obs = await self._on_model_thread(self._observation, tokens[-1], how)
        return JSONResponse({"session_id": s.id, **obs})

    async def session_reset(self, request: Request):
        how = self._frame_mode(request)
        s = self.registry.session(request.path_params["sid"])
        sampling, context, seed, tokens, actions = await self._session_prompt(request)
        if (sampling, context) != (s.sampling, s.context):
            raise BadRequest("reset: sampling settings and max_context_length are fixed per session; "
                             "open a new session to change them", status=409)
        self.registry.replace_prompt(s, tokens, actions, seed)
        obs = await self._on_model_thread(self._observation, tokens[-1], how)
        return JSONResponse({"session_id": s.id, **obs})

    async def session_step(self, request: Request):
        how = self._frame_mode(request)
        s = self.registry.session(request.path_params["sid"])
        raw = await request.body()
        body = parse_json_field(raw.decode("utf-8", "replace") if raw else None, "request body")
        action = parse_action(body.get("action"), "action", wham_buttons=False)
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def on_step(result):  # called by the scheduler thread, under the registry lock
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        self.registry.request_step(s, action, on_step)
        result = await done  # the step completes even if the client left; the session stays consistent
        if isinstance(result, Exception):
            raise result if isinstance(result, BadRequest) else BadRequest(str(result), status=500)
        payload = await run_in_threadpool(_frame_payload, result["frame"], how)
        return JSONResponse({"tokens": result["tokens"].tolist(), "reward": result["reward"],
                             "terminated": result["terminated"], "step": result["step"], **payload})

    async def close_session(self, request: Request):
        self.registry.close(request.path_params["sid"])
        return PlainTextResponse("OK")
