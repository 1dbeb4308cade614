"""Ray is optional: without it the package, the cluster module and the gym registration import, and building a
distributed object says how to install it."""

import subprocess
import sys

BLOCKED = """
import sys
sys.modules["ray"] = None  # as if Ray were not installed
import gymnasium as gym
import wham_gym, wham_gym.cluster
from wham_gym.cluster import RayVectorEnv
try:
    RayVectorEnv(2, "tiny")
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_without_ray_the_package_imports_and_says_how_to_install_it():
    r = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ImportError: wham_gym.cluster needs Ray" in r.stdout and "wham-gym[ray]" in r.stdout
