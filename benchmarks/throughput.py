"""Throughput benchmark: ``python benchmarks/throughput.py --model tiny``.

The same as ``wham-gym bench`` (this file only runs it); see wham_gym/measure/benchmark.py for what is measured.
"""

import sys

from wham_gym.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
