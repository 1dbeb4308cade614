"""wham_gym.memory: freed blocks stay mapped (no page faults the next step), KV caches advised onto huge pages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wham_gym import memory
from wham_gym.model.gpt import KVCache

linux_glibc = pytest.mark.skipif(memory._LIBC is None, reason="glibc's mallopt/madvise: Linux only")

# A 48 MB block (above glibc's largest mmap threshold, 32 MiB) allocated, touched and freed three times, as a
# step's prefill buffers are; prints whether the heap was kept and the minor faults of the third round.
_FAULTS = """
import resource, torch
from wham_gym.memory import keep_freed_memory
kept = keep_freed_memory()
for _ in range(3):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(12 << 20)
    t.fill_(1.0)
    del t
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(kept, f1 - f0)
"""


def _faults(**env) -> tuple[bool, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


@linux_glibc
def test_freed_blocks_stay_mapped_unless_turned_off():
    kept, faults = _faults()
    assert kept and faults < 1_000  # the block comes back from the heap, its pages still mapped
    kept, faults = _faults(WHAM_GYM_MALLOC="0")
    assert not kept and faults > 6_000  # glibc's default: a fresh mapping, 12,288 pages faulted in again


# After keep_freed_memory, a step-sized block comes from the heap's advised GiB: its pages carry the huge-page advice.
_HEAP = """
import sys, torch
sys.path.insert(0, "tests")
from test_memory import _vm_flags
from wham_gym.memory import keep_freed_memory
kept = keep_freed_memory()
t = torch.ones(16 << 20)  # 64 MB, as a large step's activations
print(kept, " hg" in _vm_flags(t.data_ptr() + t.numel() * 2))
"""


@linux_glibc
@pytest.mark.skipif(not Path("/sys/kernel/mm/transparent_hugepage").exists(), reason="no transparent huge pages")
def test_heap_is_advised_onto_huge_pages_unless_turned_off():
    root = Path(__file__).resolve().parents[1]
    for env, expected in (({}, "True True"), ({"WHAM_GYM_MALLOC": "0"}, "False False")):
        out = subprocess.run([sys.executable, "-c", _HEAP], env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                             capture_output=True, text=True, check=True, cwd=root)
        assert out.stdout.split() == expected.split(), (env, out.stdout)


def _vm_flags(address: int) -> str:
    """VmFlags of the mapping holding ``address`` in this process (/proc/self/smaps)."""
    flags, inside = None, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:  # a mapping's first line: start-end perms ...
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            flags = line
    assert flags is not None, f"no mapping holds {address:#x}"
    return flags


@linux_glibc
@pytest.mark.skipif(not Path("/sys/kernel/mm/transparent_hugepage").exists(), reason="no transparent huge pages")
def test_kv_cache_is_advised_onto_huge_pages():
    cache = KVCache(8, 3, 1510, 64, torch.float32, "cpu", keys_transposed=True)  # 9.3 MB a tensor
    for t in (cache.k, cache.v):
        assert t.shape[0] == 8 and not t.any()  # zeros, as torch.zeros
        middle = t.data_ptr() + t.numel() * t.element_size() // 2
        assert " hg" in _vm_flags(middle)  # MADV_HUGEPAGE recorded on the cache's pages
    small = memory.hugepage_zeros((3, 5), torch.float64, "cpu")
    assert small.dtype == torch.float64 and small.shape == (3, 5) and not small.any()  # under a huge page: plain
