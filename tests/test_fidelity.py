"""Fidelity measures: the shift estimator and the rollout comparison."""

import numpy as np
import pytest

from wham_gym import load_model
from wham_gym.data.episodes import Episode
from wham_gym.measure.fidelity import action_following, horizontal_shift, rollout_fidelity, zoom_factor


def test_horizontal_shift_finds_a_known_shift():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (180, 400, 3), dtype=np.uint8)
    a, b = wide[:, 50:350], wide[:, 63:363]  # the view moved 13 px: a right turn
    assert horizontal_shift(a, b) == 13
    assert horizontal_shift(b, a) == -13
    assert horizontal_shift(a, a) == 0


def test_rollout_fidelity_reports_each_horizon():
    model = load_model("tiny")
    rng = np.random.default_rng(1)
    T = 20
    ep = Episode(images=rng.integers(0, 256, (T, 3, 180, 300), dtype=np.uint8),
                 wham_actions=np.tile(np.array([0] * 12 + [5] * 4, np.float32), (T, 1)))
    out = rollout_fidelity(model, [ep], horizons=(1, 5), num=2)
    assert set(out) == {1, 5} and all(np.isfinite(v["psnr"]) and -1 <= v["ssim"] <= 1 for v in out.values())
    with pytest.raises(ValueError, match="horizon"):
        rollout_fidelity(model, [ep], horizons=(30,), num=1)


def _magnified(a: np.ndarray, z: float) -> np.ndarray:
    """``a`` seen from closer: its centre 1/z of the view filling the frame."""
    from PIL import Image

    h, w = a.shape[:2]
    box = (w / 2 - w / (2 * z), h / 2 - h / (2 * z), w / 2 + w / (2 * z), h / 2 + h / (2 * z))
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR, box=box))


def test_zoom_factor_finds_a_known_magnification():
    from PIL import Image

    small = np.random.default_rng(0).integers(0, 256, (45, 75, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(small).resize((300, 180), Image.BILINEAR))
    assert zoom_factor(a, a) == pytest.approx(1.0)
    assert zoom_factor(a, _magnified(a, 1.2)) == pytest.approx(1.2, abs=0.011)
    assert zoom_factor(_magnified(a, 1.2), a) == pytest.approx(1 / 1.2, abs=0.011)


def test_action_following_measures_the_game_and_the_dream(tmp_path):
    import importlib.util
    from pathlib import Path

    from PIL import Image

    pytest.importorskip("vizdoom")
    out = action_following(load_model("tiny"), scenario="my_way_home", steps=3, seeds=(0,), keep_frames=True)
    game = {name: m["game"] for name, m in out["per_step"].items()}
    # The game itself: the probes do what the controller mapping says.
    assert game["turn right"] > 5 and game["turn left"] < -5
    assert game["forward"] > 1.02 and game["backward"] < 1.0 and game["still"] == pytest.approx(1.0)
    k = len(out["probes"])
    assert np.array(out["psnr_dream_vs_game"]).shape == (k, k) and 0 <= out["discrimination"] <= 1
    hits, decisions = out["recognised_per_start"]
    assert decisions == k * out["starts"] and 0 <= hits <= decisions
    assert out["game"].shape == out["dream"].shape == (k, 4, 180, 300, 3)
    assert (out["game"][:, 0] == out["dream"][:, 0]).all()  # both start from the same real frame

    spec = importlib.util.spec_from_file_location("fid", Path(__file__).parents[1] / "benchmarks" / "fidelity.py")
    fid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fid)
    fid.probe_picture(out, tmp_path / "probes.png")
    assert Image.open(tmp_path / "probes.png").size == (2 * 2 * 300 // 2, k * 180 // 2)  # steps 0, 2 of each


def test_strafe_probes_in_take_cover_with_its_status_bar():
    from wham_gym.measure.fidelity import STRAFE_PROBES

    pytest.importorskip("vizdoom")
    out = action_following(load_model("tiny"), scenario="take_cover", steps=3, seeds=(0,), probes=STRAFE_PROBES,
                           env_kwargs={"render_hud": True}, keep_frames=True)
    assert out["probes"] == ["still", "strafe left", "strafe right"]
    game = {name: m["game"] for name, m in out["per_step"].items()}
    # Strafing right moves the room left in view (as turning right does), strafing left the other way.
    # (standing still, moving monsters and fireballs nudge the estimate by a pixel or so)
    assert game["strafe right"] > game["still"] + 3 and game["strafe left"] < game["still"] - 3
    hud = out["game"][0, 0, 160:]  # the status bar the data was recorded with is in the game's frames
    assert hud.std() > 20


def test_decoding_benchmark_pairs_modes_window_by_window():
    """benchmarks/decoding.py compares a mode with the first one on the same windows: the mean difference and a
    95 % interval, equal frames (+inf PSNR on both sides) left out rather than turned into NaN."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("dec", Path(__file__).parents[1] / "benchmarks" / "decoding.py")
    dec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dec)
    out = dec.paired([20.0, 21.0, 19.0, np.inf], [19.0, 20.0, 19.5, np.inf])
    assert out["windows"] == 3 and out["mean"] == pytest.approx(0.5)
    lo, hi = out["ci95"]
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * np.std([1.0, 1.0, -0.5], ddof=1) / np.sqrt(3),
                                                       abs=2e-3)
