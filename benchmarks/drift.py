"""Drift benchmark: ``python benchmarks/drift.py --data data/dtc [--model default --horizon 200]``.

The same as ``wham-gym drift`` (this file only runs it); see wham_gym/measure/drift.py.
"""

import sys

from wham_gym.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["drift", *sys.argv[1:]]))
