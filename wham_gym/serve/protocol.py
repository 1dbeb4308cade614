"""The wire format of WHAM's ``run_server.py``: what a ``new_job`` form holds and what a poll returns.

Pure functions, no HTTP and no threads: a request's parts go in, a validated
:class:`JobSpec` (or a :class:`BadRequest` saying what was expected, what came
and how to fix it) comes out; finished steps go in, a results zip comes out.

Rules kept from the release (match them, clients depend on them):
  * sampling fields may be numbers or strings (the release parses ``float_or_none``),
    ``"None"`` meaning unset; defaults temperature 0.9, top_k None, top_p 1.0, context 10;
  * actions are 12 buttons then 4 sticks; sticks are binned in float64 with WHAM's
    boundaries (``np.digitize``) and buttons truncated as WHAM's token encoder does;
    results report sticks as bin middles;
  * ``future_actions[i]``, when given, is the action taken at dreamt frame ``i`` in place
    of the model's own, and is what result ``i`` reports;
  * results are ``{job_id}_{step}.png`` per step plus ``predictions.json``.

Deliberate differences, each safer than the release's behaviour: malformed input is a
4xx with a message instead of a 500; a context longer than ``max_context_length`` keeps
its newest steps (the release's first step took the oldest, its later steps the newest);
``max_concurrent_jobs`` jobs may run (the release's ``>=`` test allowed one fewer); an
explicit ``top_k`` turns the default ``top_p`` off (WHAM takes one or the other).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import controller
from ..prompts import resize_linear

PREDICTIONS_FILE = "predictions.json"
DEFAULT_SAMPLING = {"temperature": 0.9, "top_k": None, "top_p": 1.0, "max_context_length": 10}
MAX_IMAGE_PIXELS = 4096 * 4096  # decompression-bomb guard: a PNG's pixels, checked before decoding


class BadRequest(Exception):
    """Input the server refuses; ``status`` is the HTTP code, the message says what to send instead."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Sampling:
    """A stream's sampling settings; streams with equal settings can share an engine step."""

    temperature: float = 0.9
    top_k: int | None = None
    top_p: float | None = 1.0

    def engine_kwargs(self) -> dict:
        return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                    min_tokens_to_keep=1, deterministic=False)


@dataclass
class JobSpec:
    """A validated ``new_job`` request: the prompt as tokens or frames, and what to dream."""

    num_steps: int
    num_parallel: int
    sampling: Sampling
    context: int  # frames of context the job keeps (max_context_length, capped by the model)
    frames: list  # per prompt step: uint8 (H, W, 3) at the model's size, or None when tokens were given
    tokens: list  # per prompt step: int64 (tokens_per_image,) or None
    actions: np.ndarray  # (P, 16) float32, quantized: the action taken at each prompt step
    future_actions: np.ndarray  # (F, 16) float32, quantized
    seed: int | None = None  # ours, not the release's: makes a job reproducible


# ------------------------------------------------------------------ fields
def _number(value, name: str, *, integer: bool = False, allow_none: bool = True):
    """A JSON number or numeric string (the release accepts both); "None"/null -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        if allow_none:
            return None
        raise BadRequest(f"{name}: expected a number, received {value!r}")
    if isinstance(value, bool):
        raise BadRequest(f"{name}: expected a number, received {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}: expected a number (or \"None\"), received {value!r}") from None
    if not math.isfinite(x):
        raise BadRequest(f"{name}: expected a finite number, received {value!r}")
    if integer:
        if x != int(x):
            raise BadRequest(f"{name}: expected a whole number, received {value!r}")
        return int(x)
    return x


def parse_sampling(body: dict, seq_len: int) -> tuple[Sampling, int]:
    """Sampling settings and context length, release defaults filled in, checked like the engine checks them."""
    temperature = _number(body.get("temperature", DEFAULT_SAMPLING["temperature"]), "temperature", allow_none=False)
    top_k = _number(body.get("top_k"), "top_k", integer=True)
    top_p = _number(body.get("top_p", None if top_k is not None else DEFAULT_SAMPLING["top_p"]), "top_p")
    context = _number(body.get("max_context_length", DEFAULT_SAMPLING["max_context_length"]), "max_context_length",
                      integer=True, allow_none=False)
    if temperature < 0:
        raise BadRequest(f"temperature: expected >= 0 (values below 0.1 act as 0.1), received {temperature}")
    if top_k is not None and top_k < 1:
        raise BadRequest(f"top_k: expected a whole number >= 1 (1 = argmax) or \"None\", received {top_k}")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise BadRequest(f"top_p: expected a number in [0, 1] or \"None\", received {top_p}")
    if top_k is not None and top_p is not None:
        raise BadRequest(f"top_k={top_k} and top_p={top_p}: WHAM samples with one or the other; "
                         "send \"top_p\": \"None\" with top_k (or leave top_p out)")
    if context < 1:
        raise BadRequest(f"max_context_length: expected a whole number >= 1, received {context}")
    # The model sees at most seq_len - 1 complete steps before the frame it predicts.
    return Sampling(float(temperature), top_k, top_p), min(context, seq_len - 1)


def parse_action(value, name: str, *, wham_buttons: bool = True) -> np.ndarray:
    """16 numbers in controller space -> float32 controller vector as WHAM sees it (0/1 buttons, bin-middle sticks).

    Sticks must lie in WHAM's bins ([-1.05, 1.05)) and buttons in [0, 1]; binning is float64 as in the release.
    ``wham_buttons=False`` presses a button at >= 0.5 (the env's rule) instead of WHAM's truncation.
    """
    if not isinstance(value, (list, tuple)) or len(value) != controller.ACTION_DIM:
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise BadRequest(f"{name}: expected a list of 16 numbers (12 buttons in [0, 1], then 4 sticks in [-1, 1]), "
                         f"received {got}")
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}: expected 16 numbers, received {value!r}") from None
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        i = int(bad[0])
        raise BadRequest(f"{name}: dimension {i} ({controller.ACTION_NAMES[i]}) is {value[i]!r}; "
                         "actions must be finite numbers")
    buttons, sticks = a[: controller.NUM_BUTTONS], a[controller.STICK_SLICE]
    if ((buttons < 0) | (buttons > 1)).any():
        i = int(np.flatnonzero((buttons < 0) | (buttons > 1))[0])
        raise BadRequest(f"{name}: button {i} is {buttons[i]}; buttons must lie in [0, 1] (1 = pressed)")
    lo, hi = controller.STICK_BIN_BOUNDARIES[0], controller.STICK_BIN_BOUNDARIES[-1]
    if ((sticks < lo) | (sticks >= hi)).any():
        i = int(np.flatnonzero((sticks < lo) | (sticks >= hi))[0])
        raise BadRequest(f"{name}: {controller.STICK_NAMES[i]} is {sticks[i]}; sticks must lie in [-1, 1] "
                         f"(WHAM's bins cover [{lo}, {hi}))")
    return controller.quantize(a, buttons="wham" if wham_buttons else "threshold").astype(np.float32)


def wire_action(action: np.ndarray) -> list[float]:
    """A quantized controller vector as results report it: 0/1 buttons and sticks at WHAM's bin middles (float64)."""
    bins = controller.sticks_to_bins(np.asarray(action[controller.STICK_SLICE], np.float64))
    return [float(b) for b in action[: controller.NUM_BUTTONS]] + [float(controller.STICK_BIN_MIDDLES[b]) for b in bins]


def decode_png(data: bytes, name: str, size: tuple[int, int]) -> np.ndarray:
    """PNG bytes -> uint8 RGB (h, w, 3) at ``size`` = (h, w), resized as WHAM's server resizes (cv2 INTER_LINEAR)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise BadRequest(f"image {name!r}: expected a PNG file, received {im.format or 'unknown'} data; "
                                 "send frames as PNG")
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise BadRequest(f"image {name!r}: {im.width}x{im.height} is too large "
                                 f"(at most {MAX_IMAGE_PIXELS} pixels); send {size[1]}x{size[0]} frames")
            frame = np.asarray(im.convert("RGB"))
    except BadRequest:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"image {name!r}: not a readable PNG ({exc}); send an uncorrupted PNG file") from None
    return resize_linear(frame, size) if frame.shape[:2] != tuple(size) else frame


def encode_png(frame: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG", compress_level=1)  # speed over size on loopback/LAN
    return out.getvalue()


# ------------------------------------------------------------------ requests
def parse_json_field(text, what: str = "field 'json'") -> dict:
    if text is None:
        raise BadRequest(f"{what} is missing; send a multipart form with a 'json' field holding the job")
    if not isinstance(text, str):
        raise BadRequest(f"{what}: expected JSON text, received a file upload")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"{what}: expected a JSON object, received {type(body).__name__}")
    return body


def parse_steps(body: dict, files: dict, *, size: tuple[int, int], tokens_per_image: int, image_vocab: int,
                wham_buttons: bool = True, keep_last: int | None = None):
    """``steps`` -> (frames, tokens, actions) of the newest ``keep_last`` steps (all by default): each step's
    frame (or its tokens when given) and its action. Every step is checked; only kept images are decoded."""
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps:
        raise BadRequest("steps: expected a non-empty list of {image_name, action, tokens} (the prompt), "
                         f"received {type(steps).__name__ if steps is not None else 'nothing'}")
    first_kept = 0 if keep_last is None else max(0, len(steps) - keep_last)
    frames, tokens, actions = [], [], []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise BadRequest(f"steps[{i}]: expected an object {{image_name, action, tokens}}, received "
                             f"{type(step).__name__}")
        action = parse_action(step.get("action"), f"steps[{i}].action", wham_buttons=wham_buttons)
        if i < first_kept:
            continue  # older than the context the job keeps
        actions.append(action)
        toks = step.get("tokens")
        if toks:  # the release: tokens, when given, stand for the image
            if not isinstance(toks, list) or len(toks) != tokens_per_image or not all(
                    isinstance(t, int) and not isinstance(t, bool) and 0 <= t < image_vocab for t in toks):
                raise BadRequest(f"steps[{i}].tokens: expected {tokens_per_image} whole numbers in "
                                 f"[0, {image_vocab - 1}] (or [] to use the image)")
            tokens.append(np.array(toks, np.int64))
            frames.append(None)
            continue
        name = step.get("image_name")
        if not isinstance(name, str) or name not in files:
            raise BadRequest(f"steps[{i}].image_name: {name!r} names no file part of the form; upload each "
                             f"step's PNG as a file part named by its image_name (parts: {sorted(files)[:8]})")
        frames.append(decode_png(files[name], name, size))
        tokens.append(None)
    return frames, tokens, np.stack(actions)


def parse_new_job(body: dict, files: dict, *, max_steps: int, max_jobs: int, seq_len: int, size: tuple[int, int],
                  tokens_per_image: int, image_vocab: int) -> JobSpec:
    """A ``new_job`` request's JSON (already parsed) and file parts (name -> bytes) -> :class:`JobSpec`."""
    if "num_steps_to_predict" not in body:
        raise BadRequest("num_steps_to_predict not in request: send how many frames to dream "
                         f"(1 to {max_steps})")
    n = _number(body["num_steps_to_predict"], "num_steps_to_predict", integer=True, allow_none=False)
    if not 1 <= n <= max_steps:
        raise BadRequest(f"num_steps_to_predict too large or small: received {n}, expected 1 to {max_steps} "
                         "(max_dream_steps_per_job, see GET /)")
    parallel = _number(body.get("num_parallel_predictions", 1), "num_parallel_predictions", integer=True,
                       allow_none=False)
    if not 1 <= parallel <= max_jobs:
        raise BadRequest(f"num_parallel_predictions: expected a whole number in [1, {max_jobs}] "
                         f"(max_concurrent_jobs), received {parallel}")
    sampling, context = parse_sampling(body, seq_len)
    frames, tokens, actions = parse_steps(body, files, size=size, tokens_per_image=tokens_per_image,
                                          image_vocab=image_vocab, keep_last=context)
    future = body.get("future_actions") or []
    if not isinstance(future, list):
        raise BadRequest(f"future_actions: expected a list of {{action: [16 numbers]}}, received {type(future).__name__}")
    fut = [parse_action(f.get("action") if isinstance(f, dict) else f, f"future_actions[{i}].action")
           for i, f in enumerate(future)]
    seed = _number(body.get("seed"), "seed", integer=True)
    if seed is not None and seed < 0:
        raise BadRequest(f"seed: expected a whole number >= 0, received {seed}")
    return JobSpec(num_steps=n, num_parallel=parallel, sampling=sampling, context=context,
                   frames=frames, tokens=tokens, actions=actions,
                   future_actions=np.stack(fut) if fut else np.zeros((0, controller.ACTION_DIM), np.float32),
                   seed=seed)


# ------------------------------------------------------------------ results
def results_zip(results) -> bytes:
    """``results``: (job_id, step, frame uint8 (H, W, 3), action, tokens) tuples -> the release's zip."""
    out, predictions = io.BytesIO(), []
    with zipfile.ZipFile(out, "w") as z:
        for job_id, step, frame, action, tokens in results:
            filename = f"{job_id}_{step}.png"
            z.writestr(filename, encode_png(frame))
            predictions.append({"job_id": job_id, "dream_step_index": step, "action": wire_action(action),
                                "tokens": [int(t) for t in tokens], "image_filename": filename})
        z.writestr(PREDICTIONS_FILE, json.dumps(predictions))
    return out.getvalue()
