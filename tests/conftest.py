"""Fixtures shared by the env and SB3 tests, and the suite's thread count."""

import os

import pytest
import torch

from wham_gym import load_model


def pytest_configure(config):
    # One torch thread for the whole suite, subprocesses included: its models are tiny, and on a
    # shared 2-core machine more threads than free cores make torch 3-20x slower (measured in an
    # earlier session: 759 s under load with torch's default threads, 227 s with one).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


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
