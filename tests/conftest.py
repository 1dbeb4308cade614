"""Fixtures shared by the env and SB3 tests, the suite's thread count, and running without pytest-xdist."""

import os

import pytest
import torch

from wham_gym import load_model
from wham_gym.threads import default_threads


def pytest_addoption(parser, pluginmanager):
    # setup.cfg's addopts ask for pytest-xdist (-n 2 --dist loadgroup). Without it (not installed, or
    # -p no:xdist) those two options are accepted and ignored, and the suite runs in this one process.
    # (_addoption: pytest reserves lowercase short options such as -n for plugins, as xdist does.)
    if not pluginmanager.hasplugin("xdist"):
        group = parser.getgroup("xdist", "pytest-xdist not loaded")
        group._addoption("-n", "--numprocesses", dest="ignored_numprocesses", default=None,
                         help="ignored without pytest-xdist: one process")
        group._addoption("--dist", dest="ignored_dist", default=None, help="ignored without pytest-xdist")


def _test_processes(config) -> int:
    """How many processes run tests at once: pytest-xdist's workers, or this one."""
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # in a worker
        return int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    if getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None):  # the controller
        return len(config.option.tx)
    return 1


def pytest_configure(config):
    # Torch threads for the suite (subprocesses included): the cores other processes leave free,
    # shared among the processes that run tests (pytest-xdist's workers), at least one each. A
    # loaded machine is then not oversubscribed (an earlier session measured 759 s under load with
    # torch's default threads against 227 s with one); 2 workers on 2 idle cores get one each.
    # The controller sets OMP_NUM_THREADS before it starts the workers, so they inherit it.
    threads = default_threads(_test_processes(config), cap=torch.get_num_threads())  # wham_gym/threads.py
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


@pytest.fixture(scope="module")
def model64():
    """The tiny model in float64, its GPT weights sharpened so sampling has structure to get wrong (the exactness
    tests of the engine's decodings against the reference procedure)."""
    m = load_model("tiny", dtype=torch.float64)
    with torch.no_grad():
        for p in m.gpt.parameters():
            p.mul_(4.0)
    return m
