"""Every code block of the README runs as written.

Python blocks run in order in one namespace (later blocks use the ``model`` an
earlier one loaded), in a scratch folder, with the shipped default model and
prompts. Shell blocks are checked without running their (long) jobs: each
``wham-gym`` line must parse with the real CLI parser and each
``python -m agents.X`` line with that script's parser; ``pip``/``pytest`` lines
are what CI itself runs.
"""

import re
import shlex
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(kind):
    text = README.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(2)) for m in BLOCK.finditer(text) if m.group(1) == kind]


def commands(code):
    """Shell lines of a block: continuations joined, comments dropped, ``a && b`` split."""
    joined = code.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        for part in line.split("&&"):
            if part.strip():
                yield shlex.split(part)


def starts_ray(code):
    return "import ray\n" in code


def run_block(line, code, namespace):
    try:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    except Exception as exc:  # name the block that broke
        pytest.fail(f"README.md block at line {line} fails: {type(exc).__name__}: {exc}")


def test_python_blocks_run_as_written(tmp_path, monkeypatch):
    """Every block but the Ray one, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    namespace = {}
    found = [(line, code) for line, code in blocks("python") if not starts_ray(code)]
    assert len(found) >= 5
    for line, code in found:
        run_block(line, code, namespace)
    assert (tmp_path / "dreams" / "dream.json").is_file()  # the dream block wrote its folder
    namespace["envs"].close()


# The block that starts a local Ray runs on the Ray tests' worker (tests/test_cluster.py), alone: it uses nothing
# the other blocks define but numpy, so the rest need not wait for that worker.
@pytest.mark.xdist_group("ray")
def test_ray_block_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    found = [(line, code) for line, code in blocks("python") if starts_ray(code)]
    assert len(found) == 1
    (line, code), = found
    namespace = {"np": __import__("numpy")}
    run_block(line, code, namespace)
    assert namespace["obs"].shape == (2, 180, 300, 3)


def test_shell_blocks_parse_with_the_real_parsers():
    from agents import collect, compare, evaluate, loop, train_sb3
    from wham_gym.commands.main import build_parser

    parsers = {"agents.train_sb3": train_sb3.build_parser(), "agents.compare": compare.build_parser(),
               "agents.loop": loop.build_parser(), "agents.collect": collect.build_parser(),
               "agents.evaluate": evaluate.build_parser()}
    checked = 0
    for line, code in blocks("bash"):
        for argv in commands(code):
            if argv[0] == "wham-gym":
                build_parser().parse_args(argv[1:])  # SystemExit on an unknown option fails the test
            elif argv[:2] == ["python", "-m"] and argv[2] in parsers:
                parsers[argv[2]].parse_args(argv[3:])
            elif argv[:2] == ["python", "-m"] and argv[2].startswith("agents."):
                pytest.fail(f"README.md block at line {line}: add {argv[2]}'s parser to this test")
            elif argv[0] in ("pip", "python"):
                continue  # installs and the test run: what CI does
            else:
                pytest.fail(f"README.md block at line {line}: no check for {argv[0]!r}")
            checked += 1
    assert checked >= 8
