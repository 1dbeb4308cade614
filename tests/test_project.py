"""The project's promises about itself: the README's commands, the CLI, the CI script."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one():
    cmds = quick_start_commands()
    assert len(cmds) == 2
    assert "wham-gym demo" in cmds[0]
    assert "pytest" in cmds[1]
    assert cmds[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_demo_writes_frames(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "wham_gym", "demo", "--model", "tiny", "--out", str(out), "--steps", "3", "--num", "2"]
    subprocess.run(cmd, check=True, capture_output=True)
    frames = sorted((out / "dream_1" / "frames").glob("*.png"))
    assert len(frames) == 4
    assert np.asarray(Image.open(frames[-1])).shape == (180, 300, 3)
    lines = (out / "actions.csv").read_text().splitlines()
    assert lines[0].startswith("env,step,button_0") and len(lines) == 1 + 2 * 3
    assert (out / "dream_0" / "dream.mp4").is_file() and (out / "dream_0" / "summary.png").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_info_and_help():
    r = subprocess.run([sys.executable, "-m", "wham_gym", "info", "tiny"], capture_output=True, text=True, check=True)
    assert '"tokens_per_image": 60' in r.stdout
    r = subprocess.run([sys.executable, "-m", "wham_gym", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("demo", "convert", "info"):
        assert cmd in r.stdout
