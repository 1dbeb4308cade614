"""``wham-gym bench``: engine vs reference-algorithm throughput and the physical floor (see wham_gym.measure.benchmark)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_OUT = "benchmarks/results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options; shared with benchmarks/throughput.py."""
    p.add_argument("--model", default="tiny", help="preset name (tiny, wham-200m, wham-1.6b), .ckpt or model directory")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="engine dtype (the reference always runs in float32, like WHAM's)")
    p.add_argument("--num-envs", default=None,
                   help="comma-separated N to sweep, e.g. 1,2,4,8 (default: doubling from 1 to --max-envs)")
    p.add_argument("--max-envs", type=int, default=64, help="largest N of the default doubling sweep (default 64)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per N (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per N (default 1)")
    p.add_argument("--engine", choices=("both", "frames", "tokens"), default="both",
                   help="engine variants: with decoding to frames, tokens only, or both (default)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference algorithm")
    p.add_argument("--decoding", choices=("exact", "diagonal", "speculative"), default="exact",
                   help="the engine's decoding: exact (WHAM's, default), diagonal (one anti-diagonal per pass, "
                        "approximate) or speculative (exact's tokens, verified drafts from the previous frame)")
    p.add_argument("--modes", default=None, metavar="MODE,...",
                   help="several engine modes side by side in one run, each DECODING[+rK][+compile], e.g. "
                        "exact,exact+compile,diagonal,speculative,diagonal+r5 (replaces --decoding and --compile)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the engine's prefill and decode passes (compiled once per N, in warm-up: "
                        "the table's warm-up column)")
    p.add_argument("--peer", action="store_true",
                   help="also measure the peer a user might pick instead: Hugging Face transformers' GPT-2 "
                        "greedy generation with its static KV cache on the same weights, tokens only "
                        "(needs pip install transformers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("bench", help="env-frames/s and peak memory vs N: engine, reference algorithm, floor",
                       description="Measure DreamEngine and WHAM's reference generation algorithm (fp32, full "
                                   "re-prefill per frame) with the same weights over a sweep of N, and compare "
                                   "each with the physical floor (KV-cache and weight reads over measured "
                                   "bandwidth, FLOPs over measured matmul rate). Writes CSV, JSON and a PNG plot.")
    add_arguments(p)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from ..measure import benchmark
    from ..model import resolve_device

    resolve_device(args.device)  # a clear one-line error for --device cuda on a CPU-only torch
    num_envs = benchmark.parse_num_envs(args.num_envs) if args.num_envs else benchmark.doubling(args.max_envs)
    variants = {"both": ["engine-frames", "engine-tokens"], "frames": ["engine-frames"],
                "tokens": ["engine-tokens"]}[args.engine]
    if not args.no_reference:
        variants.append("reference")
    if args.peer:
        variants.append("transformers")
        try:
            benchmark.peer.require_transformers()
        except ImportError as exc:
            print(f"wham-gym bench --peer: {exc} (or pip install 'wham-gym[peer]')", file=sys.stderr)
            return 1
    mode = args.decoding + ("+compile" if args.compile else "")  # --modes' syntax for the one mode
    result = benchmark.benchmark(model=args.model, device=args.device, dtype=args.dtype, num_envs=num_envs,
                                 steps=args.steps, warmup=args.warmup, variants=variants, seed=args.seed,
                                 progress=not args.no_progress,
                                 modes=args.modes.split(",") if args.modes else [mode])
    meta = result["meta"]
    print(f"\n{meta['model']} on {meta['device_name']}, engine {meta['dtype']}, reference float32, "
          f"torch {meta['torch']}; bandwidth {meta['bandwidth_B_per_s'] / 1e9:.1f} GB/s, "
          f"matmul {meta['matmul_flop_per_s'] / 1e12:.3g} TFLOP/s ({meta['dtype']})")
    print(benchmark.format_table(result))
    for kind, path in benchmark.write_results(result, args.out).items():
        print(f"wrote {path}")
    return 0
