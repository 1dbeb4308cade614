"""Retrieval-bank search at scale (issue 7): ``python benchmarks/retrieval.py --frames 1000000 --queries 8``.

Builds a tokens-only RetrievalSource of random tokens with the default model's
shape (135 tokens per frame, 1024 codes) and times ``nearest`` for a batch of
queries: the cost of one reinjection step for that many envs. Prints one
markdown row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from wham_gym import load_model
from wham_gym.reinjection import RetrievalSource


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    model = load_model(args.model, device=args.device)
    c = model.config
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, c.image_vocab_size, (args.frames, c.tokens_per_image), generator=g, dtype=torch.int16)
    bank = RetrievalSource.from_tokens(model, tokens, chunk=args.chunk)
    want = torch.randint(0, args.frames, (args.queries,), generator=g)
    query = bank.tokens[want.to(bank.tokens.device)].long()
    found = bank.nearest(query)  # warm-up, and a check: the queries are in the bank
    assert torch.equal(found.cpu(), want), "nearest did not return the exact frames"
    times = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        bank.nearest(query)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    mb = bank.tokens.numel() * bank.tokens.element_size() / 2**20
    print(f"| {args.frames:,} | {args.queries} | {mb:.0f} MB | {min(times) * 1e3:.0f} ms | "
          f"{args.device} ({torch.get_num_threads()} threads) |")


if __name__ == "__main__":
    main()
