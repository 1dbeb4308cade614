"""The one window sampler (wham_gym.data.windows): both weightings, short episodes, laziness, errors."""

import numpy as np
import pytest

from wham_gym.data.windows import count_windows, sample_windows, window_at


def test_window_at_enumerates_every_window_once_in_order():
    lengths = [5, 2, 4]  # 3 windows of 3, none, 2
    which, starts = window_at(lengths, 3, np.arange(count_windows(lengths, 3)))
    assert list(zip(which.tolist(), starts.tolist())) == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]


def test_per_window_weights_every_step_alike_and_per_episode_every_episode_alike():
    rng = np.random.default_rng(0)
    lengths = [12, 102]  # 10 and 100 windows of 3
    which, starts, sizes = sample_windows(lengths, 3, 20000, rng, per="window")
    share = np.mean(which == 0)
    assert abs(share - 10 / 110) < 0.01 and (sizes == 3).all()
    assert (starts <= np.asarray(lengths)[which] - 3).all() and (starts >= 0).all()
    which, starts, _ = sample_windows(lengths, 3, 20000, rng, per="episode")
    assert abs(np.mean(which == 0) - 0.5) < 0.02
    counts = np.bincount(starts[which == 0], minlength=10)
    assert counts.min() > 0.7 * counts.mean()  # starts uniform within the episode


def test_short_episodes_are_skipped_or_taken_whole():
    rng = np.random.default_rng(1)
    which, _, _ = sample_windows([2, 9], 5, 200, rng)
    assert set(which.tolist()) == {1}
    which, starts, sizes = sample_windows([2, 9], 5, 200, rng, allow_short=True)
    assert set(which.tolist()) == {0, 1}
    assert (sizes[which == 0] == 2).all() and (starts[which == 0] == 0).all() and (sizes[which == 1] == 5).all()


def test_only_drawn_episodes_lengths_are_read():
    class Lazy:
        def __init__(self):
            self.read = set()

        def __len__(self):
            return 1000

        def __getitem__(self, i):
            self.read.add(i)
            return 50

    lengths = Lazy()
    which, _, _ = sample_windows(lengths, 9, 5, np.random.default_rng(2), allow_short=True)
    assert lengths.read == set(which.tolist()) and len(lengths.read) <= 5


def test_bad_requests_say_what_is_wrong():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no episode has the 10 steps"):
        sample_windows([3, 4], 10, 1, rng)
    with pytest.raises(ValueError, match="per"):
        sample_windows([30], 3, 1, rng, per="step")
    with pytest.raises(ValueError, match="allow_short"):
        sample_windows([30], 3, 1, rng, per="window", allow_short=True)
