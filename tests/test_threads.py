"""Torch's thread count: the free cores shared out, --threads parsed at the CLI boundary."""

import os

import pytest
import torch

from wham_gym import threads
from wham_gym.commands.main import build_parser, main


@pytest.mark.parametrize("cores, load, processes, want", [
    (2, 0.3, 1, 2),   # idle 2-core machine: both cores
    (2, 1.4, 1, 1),   # another job keeps one core busy: one thread
    (2, 5.0, 1, 1),   # overloaded: still one
    (2, 0.0, 2, 1),   # two pytest workers on two idle cores: one each
    (16, 3.9, 2, 6),  # 13 free cores shared by two processes
])
def test_default_threads_leaves_busy_cores_alone(monkeypatch, cores, load, processes, want):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert threads.default_threads(processes) == want
    assert threads.default_threads(processes, cap=1) == 1


def test_parse_threads():
    assert threads.parse_threads("auto") is None and threads.parse_threads(None) is None
    assert threads.parse_threads("3") == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="positive int or 'auto'"):
            threads.parse_threads(bad)
    with pytest.raises(ValueError, match="processes"):
        threads.default_threads(0)


def test_cli_sets_threads_before_the_job(monkeypatch, capsys):
    seen = {}
    before = torch.get_num_threads()
    parser = build_parser()
    assert parser.parse_args(["info", "tiny"]).threads == "auto"  # every job takes it, default auto

    def fake_info(args):
        seen["torch"], seen["args"] = torch.get_num_threads(), args.threads
        return 0

    monkeypatch.setattr("wham_gym.commands.main.build_parser", lambda: _with_func(parser, "info", fake_info))
    try:
        assert main(["info", "tiny", "--threads", "1"]) == 0
        assert seen == {"torch": 1, "args": 1}
        assert main(["info", "tiny", "--threads", "zero"]) == 1
        assert "positive int or 'auto'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def _with_func(parser, job, func):
    parser._subparsers._group_actions[0].choices[job].set_defaults(func=func)
    return parser
