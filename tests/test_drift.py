"""The drift measurement: same starts for every schedule, scored before reinjection, costs counted."""

import numpy as np

from wham_gym import load_model
from wham_gym.data.episodes import Episode
from wham_gym.measure.drift import Policy, measure, summary, write
from wham_gym.reinjection import RetrievalSource, Schedule


def noise_episodes(seed: int, length: int, num: int = 2) -> list[Episode]:
    """Random frames driven by the neutral controller: truth the tiny model cannot predict."""
    rng = np.random.default_rng(seed)
    return [Episode(images=rng.integers(0, 256, (length, 3, 180, 300), dtype=np.uint8),
                    wham_actions=np.tile(np.array([0] * 12 + [5] * 4, np.float32), (length, 1)))
            for _ in range(num)]


def test_drift_rows_costs_and_outputs(tmp_path):
    model = load_model("tiny")
    eps = noise_episodes(seed=0, length=20)
    bank = RetrievalSource(model, eps[0].frames())
    policies = [Policy("off", Schedule()), Policy("every 2", Schedule(every=2)),
                Policy("retrieval", Schedule(every=3), "retrieval")]
    rows = measure(model, eps, policies, horizon=6, num=2, bank=bank, progress=False)
    assert len(rows) == 3 * 6
    cost = {r["policy"]: r["reinjections_per_100"] for r in rows}
    assert cost == {"off": 0.0, "every 2": 50.0, "retrieval": 100 * 2 / 6}
    # Step 1 precedes any reinjection: identical starts and seeds give identical first frames.
    first = [r for r in rows if r["horizon"] == 1]
    assert len({(r["psnr"], r["ssim"]) for r in first}) == 1
    # Replay every 2 steps: step 3 is conditioned on a reinjected frame, so the model's NLL differs from the free run.
    third = {r["policy"]: r["nll"] for r in rows if r["horizon"] == 3}
    assert third["every 2"] != third["off"]
    paths = write(rows, tmp_path, "tiny")
    assert paths[0].read_text().splitlines()[0] == "policy,horizon,psnr,ssim,nll,reinjections_per_100"
    assert "| every 2 | 50 |" in summary(rows)



def test_drift_measures_an_engine_setting_it_is_given():
    """engine_kwargs reach the dreams' engine: an approximate one (refresh_every) scores other frames."""
    import pytest

    model = load_model("tiny")
    eps = noise_episodes(seed=1, length=24)
    off = [Policy("off", Schedule())]
    exact = measure(model, eps, off, horizon=8, num=2, progress=False)
    kept = measure(model, eps, off, horizon=8, num=2, progress=False, engine_kwargs={"refresh_every": 3})
    assert [r["horizon"] for r in kept] == [r["horizon"] for r in exact]
    assert any(a["nll"] != b["nll"] for a, b in zip(exact, kept))  # a kept cache: another context
    with pytest.raises(ValueError, match="refresh_every"):
        measure(model, eps, off, horizon=2, num=2, progress=False, engine_kwargs={"refresh_every": 0})


def test_drift_scores_each_window_for_paired_comparisons():
    """each=True: one PSNR / SSIM per rollout, whose mean is the row's; the windows keep their order."""
    model = load_model("tiny")
    eps = noise_episodes(seed=2, length=20, num=3)
    off = [Policy("off", Schedule())]
    rows = measure(model, eps, off, horizon=3, num=3, progress=False, each=True)
    for r in rows:
        assert len(r["psnr_each"]) == len(r["ssim_each"]) == 3
        assert np.isclose(np.mean(r["psnr_each"]), r["psnr"]) and np.isclose(np.mean(r["ssim_each"]), r["ssim"])
    assert len(set(rows[0]["psnr_each"])) == 3  # three different windows, three scores
    plain = measure(model, eps, off, horizon=3, num=3, progress=False)
    assert "psnr_each" not in plain[0] and [r["psnr"] for r in plain] == [r["psnr"] for r in rows]


def test_live_windows_replay_the_same_games_and_drive_the_drift_tool(tmp_path, capsys):
    import pytest

    pytest.importorskip("vizdoom")
    from functools import partial

    from wham_gym.commands.main import main
    from wham_gym.measure.fidelity import live_windows
    from wham_gym.games.doom import DoomEnv

    make_env = partial(DoomEnv, scenario="defend_the_center")
    frames, actions = live_windows(make_env, 3, 5, 2, seed=7)
    assert frames.shape == (2, 8, 180, 300, 3) and actions.shape == (2, 8, 16)
    assert not np.array_equal(frames[0, 0], frames[0, -1])  # the game moved
    again, _ = live_windows(make_env, 3, 5, 2, seed=7)
    np.testing.assert_array_equal(again, frames)  # same seeds, same games: every schedule faces the same truth
    with pytest.raises(ValueError, match="lasted"):
        live_windows(partial(DoomEnv, scenario="defend_the_center", max_steps=4), 3, 5, 1, seed=0)
    out = tmp_path / "drift"
    from wham_gym import load_model
    from wham_gym.model.checkpoint import save_model
    from wham_gym.reinjection import Schedule, default_schedule

    model_dir = save_model(load_model("tiny"), tmp_path / "model")
    assert main(["drift", "--model", str(model_dir), "--live", "--set-default", "every often"]) == 1
    assert "every K or nll" in capsys.readouterr().err  # refused before any game is played
    assert main(["drift", "--model", str(model_dir), "--live", "--horizon", "3", "--num", "2", "--bank-frames",
                 "50", "--out", str(out), "--set-default", "every 2 or nll"]) == 0
    text = (out / "drift_tiny.csv").read_text().splitlines()
    assert len(text) == 1 + 8 * 3  # 8 schedules (off, every 5/10/20/50, retrieval, nll, both) x 3 horizons
    off_nll = [float(line.split(",")[4]) for line in text[1:] if line.startswith("off,")]
    schedule = default_schedule(load_model(str(model_dir)))  # envs now reinject as the card says
    assert schedule == Schedule(every=2, nll_above=round(float(np.percentile(off_nll, 80)), 4))


def test_drift_resumes_after_the_last_finished_policy(tmp_path, monkeypatch):
    import wham_gym.measure.drift as drift

    model = load_model("tiny")
    eps = noise_episodes(seed=1, length=16)
    bank = RetrievalSource(model, eps[0].frames())
    kw = dict(horizon=3, num=2, bank=bank, progress=False)
    parts = tmp_path / "parts"
    real_measure, calls = drift.measure, []

    def interrupted(model, episodes, policies, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(policies[0].name)
        return real_measure(model, episodes, policies, **kw)

    monkeypatch.setattr(drift, "measure", interrupted)
    try:
        drift.measure_all(model, eps, parts, {"horizon": 3}, **kw)
    except KeyboardInterrupt:
        pass
    assert len(list(parts.glob("policy_*.json"))) == 3
    calls.clear()
    monkeypatch.setattr(drift, "measure", lambda *a, **k: (calls.append(a[2][0].name), real_measure(*a, **k))[1])
    rows = drift.measure_all(model, eps, parts, {"horizon": 3}, **kw)
    assert len(calls) == 8 - 3 and calls[0] == "every 20"  # off, every 5 and every 10 were kept
    monkeypatch.setattr(drift, "measure", real_measure)
    fresh = drift.measure_all(model, eps, None, None, **kw)
    assert rows == fresh  # the resumed run equals an uninterrupted one
    calls.clear()

    def counted(model, episodes, policies, **kw):  # only which policies run matters here, not their rows
        calls.append(policies[0].name)
        return [{"policy": policies[0].name, "horizon": 1, "nll": 1.0}]

    monkeypatch.setattr(drift, "measure", counted)
    drift.measure_all(model, eps, parts, {"horizon": 4}, **{**kw, "horizon": 4})
    assert len(calls) == 8  # other settings: nothing kept
