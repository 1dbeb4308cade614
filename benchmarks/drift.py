"""Drift benchmark (issue 7): ``python benchmarks/drift.py --data data/dtc [--model default --horizon 200]``.

The same as ``wham-gym drift``; see wham_gym/drift.py.
"""

from __future__ import annotations

import argparse
import sys

from wham_gym.commands.drift import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drift.py")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["drift", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
