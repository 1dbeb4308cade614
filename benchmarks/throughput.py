"""Throughput benchmark (issue 3): ``python benchmarks/throughput.py --model tiny``.

The same as ``wham-gym bench``; see wham_gym/benchmark.py for what is measured.
"""

from __future__ import annotations

import argparse
import sys

from wham_gym.commands.bench import add_arguments, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except ValueError as exc:
        print(f"throughput.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
