"""Fixtures shared by the env and SB3 tests, and the suite's thread count."""

import os

import pytest
import torch

from wham_gym import load_model


def pytest_configure(config):
    # Torch threads for the suite (subprocesses included): the cores other processes leave free,
    # at least one. A loaded machine is then not oversubscribed (an earlier session measured 759 s
    # under load with torch's default threads against 227 s with one), and an idle one keeps both.
    cores = os.cpu_count() or 1
    free = max(1, cores - int(os.getloadavg()[0]))  # whole cores kept busy by others
    threads = min(torch.get_num_threads(), free)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    # Tiny models on a shared 2-core box: one thread avoids oversubscription stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")
