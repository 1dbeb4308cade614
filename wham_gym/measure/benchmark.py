"""Throughput benchmark: DreamEngine vs WHAM's reference algorithm vs the physical floor.

For a model and device it measures env-frames/s and peak memory over a sweep of
slot counts N, for the engine (world-model mode, with and without decoding
tokens to frames) and for :mod:`wham_gym.measure.reference` (fp32, WHAM's procedure),
with the same weights in the same run. Warm-up steps are not timed.

The floor is what the hardware needs at least for one env-frame in world-model
mode with a full window (``context_steps - 1`` complete steps of context):

* bytes: every generated image token g reads the KV cache of the ctx + g
  positions it attends to (n_layer * 2 * n_embd * bytes per element per
  position), and each of the frame's forward passes (one prefill + tpi - 1
  decode steps) reads the weights once per *batch*, hence / N;
* FLOPs: 2 * matmul parameters * tokens processed (prefill + decode), the
  lm_head for each sampled token, plus attention (4 * n_embd per query-key pair
  per layer);

each over the device's measured copy bandwidth and matmul rate; the floor time is
the larger of the two. Decoding tokens to frames is not in the floor.
"""

from __future__ import annotations

import copy
import csv
import gc
import json
import math
import platform
import resource
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ..controller import ACTION_DIM
from ..engine import DECODINGS, DreamEngine
from ..rollout import Rollout, run
from ..model import load_model
from . import peer
from .reference import ReferenceDreamer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VARIANTS = ("engine-frames", "engine-tokens", "reference")
# Peers a user might pick instead, run only when asked (optional dependencies): see wham_gym.measure.peer.
PEERS = ("transformers",)
CSV_COLUMNS = (
    "model", "device", "dtype", "variant", "num_envs", "steps", "warmup", "warmup_s", "seconds", "env_frames_per_s",
    "median_step_s", "env_frames_per_s_median", "peak_mem_mb", "peak_mem_kind", "floor_env_frames_per_s",
    "floor_bound", "fraction_of_floor",
)


# ----------------------------------------------------------------------------- floor arithmetic
def gpt_weight_counts(gpt_cfg) -> dict[str, int]:
    """Parameter counts of WHAM's nanoGPT from its config (§3: 12d² + 13d per layer with bias)."""
    d, L, V, S = gpt_cfg.n_embd, gpt_cfg.n_layer, gpt_cfg.vocab_size, gpt_cfg.block_size
    matmul = L * 12 * d * d  # c_attn 3d², attn c_proj d², mlp 8d²
    small = L * ((3 * d + d + 4 * d + d) if gpt_cfg.bias else 0)  # linear biases
    per_norm = d * (2 if gpt_cfg.bias else 1)
    norms = (2 * L + 1) * per_norm if gpt_cfg.version == 1 else per_norm  # v2: only ln_f is affine
    return {"matmul": matmul, "wte": V * d, "wpe": S * d, "other": small + norms,
            "total": matmul + small + norms + V * d + S * d}


@dataclass
class Floor:
    """Per env-frame lower bound on time for one model, N and device."""

    num_envs: int | None  # None: the large-N limit (weight reads amortised away)
    kv_positions: int  # cache positions read, summed over the generated tokens
    kv_bytes: float
    weight_bytes_per_batch_step: float
    bytes_per_frame: float
    flops_per_frame: float
    seconds_bytes: float
    seconds_flops: float
    bound: str  # "bytes" or "flops"
    env_frames_per_s: float


def floor(config, num_envs: int | None, bytes_per_element: int, bandwidth: float, flops_rate: float,
          context_steps: int | None = None) -> Floor:
    """The physical floor for ``config`` (a WHAMConfig) stepping ``num_envs`` slots; see the module doc."""
    if bandwidth <= 0 or flops_rate <= 0:
        raise ValueError(f"bandwidth and flops_rate must be positive, got {bandwidth}, {flops_rate}")
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"num_envs must be >= 1 or None, got {num_envs}")
    g, L, d = config.gpt, config.n_layer, config.n_embd
    ctx = ((context_steps or config.seq_len) - 1) * config.tokens_per_step  # 9 * 556 = 5004 for WHAM
    n = config.tokens_per_image  # tokens generated per frame
    kv_positions = n * ctx + n * (n - 1) // 2  # token g attends to ctx + g positions
    kv_bytes = kv_positions * L * 2 * d * bytes_per_element
    w = gpt_weight_counts(g)
    # Every forward pass reads all weights except the position table (only rows are gathered);
    # a frame takes one prefill + n - 1 single-token passes.
    weight_bytes = (w["total"] - w["wpe"]) * bytes_per_element * n
    bytes_per_frame = kv_bytes + (weight_bytes / num_envs if num_envs else 0.0)
    tokens = ctx + n - 1  # prefill + decode inputs
    prefill_pairs = ctx * (ctx + 1) // 2
    decode_pairs = sum(ctx + k for k in range(1, n))
    flops = 2 * w["matmul"] * tokens + 2 * d * g.vocab_size * n + 4 * d * L * (prefill_pairs + decode_pairs)
    t_bytes, t_flops = bytes_per_frame / bandwidth, flops / flops_rate
    return Floor(num_envs=num_envs, kv_positions=kv_positions, kv_bytes=float(kv_bytes),
                 weight_bytes_per_batch_step=float(weight_bytes), bytes_per_frame=float(bytes_per_frame),
                 flops_per_frame=float(flops), seconds_bytes=t_bytes, seconds_flops=t_flops,
                 bound="bytes" if t_bytes >= t_flops else "flops", env_frames_per_s=1.0 / max(t_bytes, t_flops))


# ----------------------------------------------------------------------------- device measurements
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_bandwidth(device, nbytes: int | None = None, repeats: int = 5) -> float:
    """Device memory bandwidth in B/s from a large tensor copy (read + write counted)."""
    device = torch.device(device)
    nbytes = nbytes or (2 << 30 if device.type == "cuda" else 256 << 20)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src), device, repeats)
    return 2 * src.numel() * 4 / t


def measure_matmul_rate(device, dtype, size: int | None = None, repeats: int = 5) -> float:
    """Dense matmul rate in FLOP/s for square matrices in ``dtype``."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    t = _best_time(lambda: a @ b, device, repeats)
    return 2 * size**3 / t


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- peak memory
class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or the process's peak RSS on CPU.

    On Linux the RSS high-water mark can be reset (``/proc/self/clear_refs``), giving a
    per-measurement peak ("rss-peak"); otherwise ``getrusage`` gives the lifetime peak of
    the process ("rss-lifetime-peak"), which only grows over a sweep.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.kind = "cuda-allocated" if self.device.type == "cuda" else None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.kind = "rss-peak"
            except OSError:
                self.kind = "rss-lifetime-peak"
        self.mb = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "rss-peak":
            self.mb = _vm_hwm_mb()
        else:
            self.mb = _ru_maxrss_mb()
        return False


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return _ru_maxrss_mb()


def _ru_maxrss_mb() -> float | None:
    try:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return kb / 2**20 if platform.system() == "Darwin" else kb / 1024  # bytes on macOS, kB on Linux


# ----------------------------------------------------------------------------- workloads
def full_window_prompt(model, num_envs: int, seed: int = 0):
    """Random image tokens for a full window and random actions: every step sees 9 complete steps."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    P = cfg.seq_len - 1
    tokens = torch.from_numpy(rng.integers(0, cfg.image_vocab_size, (num_envs, P, cfg.tokens_per_image)))
    return tokens, random_actions(rng, num_envs, P - 1)


def random_actions(rng, *shape) -> torch.Tensor:
    a = rng.uniform(-1, 1, (*shape, ACTION_DIM)).astype(np.float32)
    a[..., :12] = rng.random((*shape, 12)) < 0.3
    return torch.from_numpy(a)


def _time_steps(step, actions, device, warmup: int, progress=None) -> list[float]:
    """Seconds of each timed step (after ``warmup`` untimed ones); one device sync per step."""
    for a in actions[:warmup]:
        step(a)
    _sync(device)
    times = []
    for a in actions[warmup:]:
        t0 = time.perf_counter()
        step(a)
        _sync(device)
        times.append(time.perf_counter() - t0)
        if progress is not None:
            progress.update(1)
    return times


def run_engine(model, num_envs: int, steps: int, warmup: int, decode: bool, seed: int = 0, progress=None,
               decoding: str = "exact", engine_kwargs: dict | None = None):
    """Per-step seconds for ``steps`` timed engine steps (world-model mode) of N slots with full windows.

    ``engine_kwargs``: more :class:`DreamEngine` settings (e.g. ``refresh_every``).
    """

    roll = Rollout(DreamEngine(model, num_envs, seed=seed, decoding=decoding, **(engine_kwargs or {})))
    tokens, acts = full_window_prompt(model, num_envs, seed)
    roll.reset(None, tokens=tokens, actions=acts)
    rng = np.random.default_rng(seed + 1)
    actions = torch.stack([random_actions(rng, num_envs) for _ in range(warmup + steps)], 1).numpy()
    if warmup:
        run(roll, warmup, actions, decode=decode, keep_frames=False)
    seconds = run(roll, steps, actions[:, warmup:], decode=decode, keep_frames=False).seconds
    if progress is not None:
        progress.update(steps)
    return seconds.tolist()


def run_reference(model, num_envs: int, steps: int, warmup: int, decode: bool = True, seed: int = 0, progress=None):
    """Per-step seconds for ``steps`` timed reference-algorithm steps of N slots with full windows."""

    ref = ReferenceDreamer(model, num_envs, seed=seed)
    tokens, acts = full_window_prompt(model, num_envs, seed)
    ref.reset(tokens, acts)
    rng = np.random.default_rng(seed + 1)
    actions = [random_actions(rng, num_envs).to(model.device) for _ in range(warmup + steps)]
    return _time_steps(lambda a: ref.step(a, decode=decode), actions, model.device, warmup, progress)


def run_transformers(model, num_envs: int, steps: int, warmup: int, seed: int = 0, progress=None) -> list[float]:
    """Per-step seconds of ``steps`` timed peer steps (after ``warmup``) of N windows, as ``run_engine``'s.

    The workload is the engine benchmark's: full windows of random tokens and actions, a random action
    each step; the window slides by the generated frame, as a dream does. Frames are not decoded to pixels.
    """
    gpt2 = peer.to_gpt2(model.gpt)
    tokens, acts = full_window_prompt(model, num_envs, seed)
    rng = np.random.default_rng(seed + 1)
    window = {"tokens": tokens, "actions": acts}

    def step(action):
        t, a = window["tokens"], torch.cat([window["actions"], action[:, None]], 1)
        new = peer.generate_frames(gpt2, model, t, a).cpu()
        window["tokens"] = torch.cat([t[:, 1:], new[:, None]], 1)
        window["actions"] = a[:, 1:]

    actions = [random_actions(rng, num_envs) for _ in range(warmup + steps)]
    log = peer.require_transformers().logging
    verbosity = log.get_verbosity()
    log.set_verbosity_error()  # its advice to pass an attention mask when token 0 (its pad id) is in a prompt
    try:
        return _time_steps(step, actions, model.device, warmup, progress)
    finally:
        log.set_verbosity(verbosity)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- the sweep
class _Models:
    """Device copies of the fp32 master weights, one per dtype; only the one in use stays on the device.

    The others are parked on the CPU, so a variant's peak memory holds one model. The engine
    converts models in place (``.to``), so the master itself is handed out only where no
    conversion is needed (CPU, float32).
    """

    def __init__(self, master, device):
        self.master, self.device, self.copies = master, device, {}

    def get(self, dtype):
        for dt, m in self.copies.items():
            if dt != dtype and m is not self.master:
                m.to("cpu")
        if dtype not in self.copies:
            same = self.device.type == "cpu" and dtype == torch.float32
            self.copies[dtype] = self.master if same else copy.deepcopy(self.master).to(self.device, dtype)
        _free(self.device)
        return self.copies[dtype].to(self.device)

    def close(self):
        self.copies.clear()
        _free(self.device)


def doubling(max_envs: int) -> list[int]:
    """1, 2, 4, ... up to max_envs."""
    if max_envs < 1:
        raise ValueError(f"max_envs must be >= 1, got {max_envs}")
    return [2**i for i in range(int(math.log2(max_envs)) + 1)]


def parse_num_envs(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; positive, increasing."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--num-envs: expected comma-separated positive ints like 1,2,4, got {text!r}") from None
    if not values or any(v < 1 for v in values) or values != sorted(set(values)):
        raise ValueError(f"--num-envs: expected increasing positive ints like 1,2,4, got {text!r}")
    return values


def parse_mode(mode: str) -> tuple[str, dict]:
    """An engine mode: a decoding with optional ``+rK`` (``refresh_every`` K) and ``+compile`` parts.

    ``"diagonal+r5"`` -> ``("diagonal", {"refresh_every": 5})``;
    ``"exact+compile"`` -> ``("exact", {"compile": True})``.
    """
    decoding, *parts = str(mode).split("+")
    kwargs: dict = {}
    for part in parts:
        if part == "compile" and "compile" not in kwargs:
            kwargs["compile"] = True
        elif part[:1] == "r" and part[1:].isdigit() and "refresh_every" not in kwargs:
            kwargs["refresh_every"] = int(part[1:])
        else:
            decoding = None
    if decoding not in DECODINGS:
        raise ValueError(f"mode: expected DECODING[+rK][+compile] with DECODING one of {', '.join(DECODINGS)} and K "
                         f"the engine's refresh_every (e.g. exact, exact+compile, diagonal+r5), got {mode!r}")
    return decoding, kwargs


def benchmark(model="tiny", device="cpu", dtype="float32", num_envs=(1, 2, 4), steps: int = 4, warmup: int = 1,
              variants=VARIANTS, seed: int = 0, progress: bool = True, log=print, decoding: str = "exact",
              modes=None) -> dict:
    """Run the sweep; returns {"meta": ..., "rows": [...]} (see CSV_COLUMNS for a row's fields).

    The engine (and the ``transformers`` peer, :data:`PEERS`) runs in ``dtype``; the reference always in
    fp32 (as WHAM's), from the same fp32 master weights. Each variant stops at the first N that runs out of
    device memory, with a message; the others carry on.
    ``modes``: engine modes (:func:`parse_mode`) measured side by side in one sweep, each engine variant once
    per mode, labelled ``"engine-tokens diagonal"`` etc. (``"exact"``, or a single mode, keeps the variant's name);
    default: ``[decoding]``. A ``+compile`` mode compiles in its warm-up steps: keep ``warmup`` >= 1 to leave
    the compile out of the timing.
    """
    from tqdm.auto import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    unknown = set(variants) - set(VARIANTS + PEERS)
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of {VARIANTS + PEERS}, got {tuple(variants)}")
    if "transformers" in variants:
        peer.require_transformers()  # a clear error before any measurement
    modes = list(modes) if modes else [decoding]
    settings = {m: parse_mode(m) for m in modes}  # mode -> (decoding, engine settings), checked up front
    # What runs, in order: (label, variant, mode); engine variants once per mode.
    jobs = [(v if m in (None, "exact") or len(modes) == 1 else f"{v} {m}", v, m) for v in variants
            for m in (modes if v.startswith("engine") else [None])]
    num_envs = list(num_envs)

    # fp32 master weights on the CPU; each variant gets its own device copy in its dtype,
    # so its peak memory holds one model, and the engine's in-place .to() never touches the master.
    master = load_model(model, device="cpu", dtype=torch.float32)
    cfg = master.config
    torch_dtype = DTYPES[dtype]
    bpe = torch.tensor([], dtype=torch_dtype).element_size()
    log(f"measuring {device_name(device)}: copy bandwidth and {dtype} matmul rate ...")
    bandwidth = measure_bandwidth(device)
    flops_rate = measure_matmul_rate(device, torch_dtype)
    meta = {
        "model": cfg.name, "device": str(device), "device_name": device_name(device), "dtype": dtype,
        "modes": modes,
        "reference_dtype": "float32", "torch": torch.__version__, "date": date.today().isoformat(),
        "bandwidth_B_per_s": bandwidth, "matmul_flop_per_s": flops_rate, "steps": steps, "warmup": warmup,
        "config": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                   "tokens_per_image": cfg.tokens_per_image, "tokens_per_step": cfg.tokens_per_step,
                   "seq_len": cfg.seq_len, "gpt_parameters": master.gpt.num_parameters()},
        "floor_large_n": asdict(floor(cfg, None, bpe, bandwidth, flops_rate)),
    }

    rows, stopped = [], set()
    models = _Models(master, device)
    bar = tqdm(total=len(num_envs) * len(jobs) * steps, desc=f"bench {cfg.name}", unit="step",
               disable=not progress)
    # N outer, variants inner: on a shared or throttling machine the variants compared at
    # one N are measured minutes apart at most, not a whole sweep apart.
    for i, n in enumerate(num_envs):
        for label, variant, mode in jobs:
            if label in stopped:
                bar.update(steps)
                continue
            bar.set_postfix_str(f"{label} N={n}")
            is_ref = variant == "reference"
            m = models.get(torch.float32 if is_ref else torch_dtype)
            start = time.perf_counter()
            try:
                with PeakMemory(device) as mem:
                    if is_ref:
                        times = run_reference(m, n, steps, warmup, decode=True, seed=seed, progress=bar)
                    elif variant == "transformers":  # tokens only, greedy, the library's static cache
                        times = run_transformers(m, n, steps, warmup, seed=seed, progress=bar)
                    else:
                        dec, kwargs = settings[mode]
                        times = run_engine(m, n, steps, warmup, decode=variant == "engine-frames", seed=seed,
                                           progress=bar, decoding=dec, engine_kwargs=kwargs)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled; the rest re-raises
                if not _is_oom(exc):
                    raise
                _free(device)
                fitted = num_envs[i - 1] if i else None
                log(f"{label}: N={n} does not fit in {device_name(device)} memory "
                    f"({type(exc).__name__}); stopping this variant's sweep (largest N that ran: {fitted})")
                stopped.add(label)
                bar.update(steps)
                continue
            fl = floor(cfg, n, bpe, bandwidth, flops_rate)
            # The median step is robust to other processes on a shared machine; both are kept.
            secs, median = sum(times), float(np.median(times))
            # Before the first timed step: building the engine, the prompts and the warm-up steps, which
            # compile a compiled mode's code for this N (the compile's cost, as a user meets it).
            warmup_s = time.perf_counter() - start - secs
            fps = n * steps / secs
            rows.append({
                "model": cfg.name, "device": str(device), "dtype": "float32" if is_ref else dtype,
                "variant": label, "num_envs": n, "steps": steps, "warmup": warmup, "warmup_s": warmup_s,
                "seconds": secs,
                "env_frames_per_s": fps, "median_step_s": median,
                "env_frames_per_s_median": n / median, "peak_mem_mb": mem.mb, "peak_mem_kind": mem.kind,
                "floor_env_frames_per_s": fl.env_frames_per_s, "floor_bound": fl.bound,
                "fraction_of_floor": fps / fl.env_frames_per_s,
            })
            _free(device)
        if len(stopped) == len(jobs):
            break
    models.close()
    bar.close()
    order = [label for label, _, _ in jobs]
    rows.sort(key=lambda r: (order.index(r["variant"]), r["num_envs"]))
    return {"meta": meta, "rows": rows}


# ----------------------------------------------------------------------------- output
def write_results(result: dict, out_dir, stem: str | None = None, log=print) -> dict[str, Path]:
    """CSV + JSON (+ PNG when matplotlib is installed) into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = result["meta"]
    stem = stem or f"throughput_{meta['model']}_{meta['device']}_{meta['dtype']}"
    paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(result["rows"])
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    png = plot(result, out / f"{stem}.png", log=log)
    if png:
        paths["png"] = png
    return paths


def plot(result: dict, path, log=print) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plot (pip install matplotlib, or wham-gym[train])")
        return None
    rows, meta = result["rows"], result["meta"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == variant]
        ax1.plot([r["num_envs"] for r in rs], [r["env_frames_per_s"] for r in rs], "o-", label=variant)
        if rs[0]["peak_mem_mb"] is not None:
            ax2.plot([r["num_envs"] for r in rs], [r["peak_mem_mb"] for r in rs], "o-", label=variant)
    ns = sorted({r["num_envs"] for r in rows})
    floors = {r["num_envs"]: r["floor_env_frames_per_s"] for r in rows if r["variant"] != "reference"}
    if floors:
        ax1.plot(ns, [floors.get(n, math.nan) for n in ns], "k--", label=f"floor ({meta['dtype']})")
    for ax, label in ((ax1, "env-frames/s"), (ax2, "peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (slots)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['model']} on {meta['device_name']}, {meta['dtype']} (torch {meta['torch']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def format_table(result: dict) -> str:
    """A Markdown table of the rows, plus the large-N floor."""
    head = ("| variant | N | env-frames/s | (median step) | warm-up (s) | peak mem (MB) | floor (env-frames/s) "
            "| fraction of floor |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        mem = "n/a" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        lines.append(f"| {r['variant']} | {r['num_envs']} | {r['env_frames_per_s']:.3g} | "
                     f"{r['env_frames_per_s_median']:.3g} | {r['warmup_s']:.1f} | {mem} | "
                     f"{r['floor_env_frames_per_s']:.3g} ({r['floor_bound']}) | {r['fraction_of_floor']:.2e} |")
    fl = result["meta"]["floor_large_n"]
    lines.append("")
    lines.append(f"large-N floor: {fl['env_frames_per_s']:.3g} env-frames/s ({fl['bound']}-bound: "
                 f"{fl['bytes_per_frame'] / 1e9:.3g} GB and {fl['flops_per_frame'] / 1e12:.3g} TFLOP per env-frame)")
    return "\n".join(lines)
