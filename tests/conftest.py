"""Fixtures shared by the env and SB3 tests."""

import pytest
import torch

from wham_gym import load_model


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
