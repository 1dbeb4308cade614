"""Episode files, the dataset reader and the recorder."""

import json
import os

import numpy as np
import pytest

from wham_gym import controller
from wham_gym.data.episodes import Episode, EpisodeFormatError, is_complete, read_episode, write_episode
from wham_gym.data.reader import open_episodes


def synthetic_episode(t=12, seed=0, **extra):
    rng = np.random.default_rng(seed)
    actions = np.zeros((t, 16), np.float32)
    actions[:, :12] = rng.integers(0, 2, (t, 12))
    actions[:, 12:] = rng.integers(0, 11, (t, 4))
    return Episode(
        images=rng.integers(0, 256, (t, 3, 180, 300), dtype=np.uint8),
        wham_actions=actions,
        rewards=rng.standard_normal(t).astype(np.float32),
        terminated=np.eye(1, t, t - 1, dtype=bool)[0],
        truncated=np.zeros(t, bool),
        game_variables=rng.standard_normal((t, 2)).astype(np.float32),
        game_variable_names=("health", "angle"),
        scenario="deathmatch",
        seed=seed,
        **extra,
    )


def test_episode_round_trip_is_exact_and_deterministic(tmp_path):
    ep = synthetic_episode()
    write_episode(tmp_path / "a.npz", ep)
    write_episode(tmp_path / "b.npz", ep)
    back = read_episode(tmp_path / "a.npz")
    for key in ("images", "wham_actions", "rewards", "terminated", "truncated", "game_variables"):
        assert np.array_equal(getattr(back, key), getattr(ep, key)), key
    assert back.game_variable_names == ("health", "angle")
    assert back.scenario == "deathmatch" and back.seed == 0
    assert back.frames().shape == (12, 180, 300, 3)
    assert np.array_equal(back.actions[:, 12:], controller.bins_to_sticks(ep.wham_actions[:, 12:]))
    # fixed zip timestamps: equal content, equal bytes
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    # the file is a plain npz in WHAM's layout
    with np.load(tmp_path / "a.npz") as data:
        assert data["images"].shape == (12, 3, 180, 300) and data["actions"].dtype == np.float32
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz"]  # no temp files left


def test_invalid_episode_is_rejected_before_writing(tmp_path):
    ep = synthetic_episode()
    ep.wham_actions[3, 14] = 0.5  # a [-1, 1] stick value, not a bin index
    with pytest.raises(EpisodeFormatError, match=r"bad\.npz.*bin indices"):
        write_episode(tmp_path / "bad.npz", ep)
    ep = synthetic_episode()
    ep.images = ep.images.transpose(0, 2, 3, 1)  # HWC instead of CHW
    with pytest.raises(EpisodeFormatError, match="channel-first"):
        write_episode(tmp_path / "bad.npz", ep)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_npz_gives_a_clear_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "episode_000000.npz"
    write_episode(path, synthetic_episode())
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a zip" * 100, "empty": b""}[damage])
    assert not is_complete(path)
    # Only a damaged file we wrote is called corrupt; others are said not to be episodes (tests/test_first_hour.py).
    problem = {"truncate": "corrupt", "garbage": "not an episode", "empty": "empty"}[damage]
    with pytest.raises(EpisodeFormatError, match=rf"episode_000000\.npz.*{problem}"):
        read_episode(path)
    with pytest.raises(EpisodeFormatError, match=r"episode_000000\.npz"):
        list(open_episodes(tmp_path))


def test_npz_with_wrong_contents_names_the_file(tmp_path):
    np.savez(tmp_path / "x.npz", frames=np.zeros((2, 3)))
    with pytest.raises(EpisodeFormatError, match=r"x\.npz.*missing \['images', 'actions'\]"):
        read_episode(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", images=np.zeros((2, 3, 180, 300), np.uint8), actions=np.zeros((3, 16), np.float32))
    with pytest.raises(EpisodeFormatError, match=r"y\.npz.*actions must be \(2,16\)"):
        read_episode(tmp_path / "y.npz")


def test_reads_official_wham_sample_layout(tmp_path):
    ep = synthetic_episode(t=7)
    path = tmp_path / "official" / "sample.npz"
    path.parent.mkdir()
    states = np.random.default_rng(0).standard_normal((7, 56)).astype(np.float32)
    np.savez_compressed(path, actions=ep.wham_actions, states=states, images=ep.images)
    (back,) = list(open_episodes(path))
    assert np.array_equal(back.images, ep.images) and np.array_equal(back.wham_actions, ep.wham_actions)
    assert back.rewards is None and back.scenario is None
    assert np.array_equal(back.states, states)
    assert back.source == str(path)


def write_demonstrator(folder, t=10, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    frames = rng.integers(0, 256, (t, 180, 300, 3), dtype=np.uint8)
    table = {}
    for k in range(t):
        Image.fromarray(frames[k]).save(folder / f"image{k}.png")
        sticks = controller.STICK_BIN_MIDDLES[rng.integers(0, 11, 4)].astype(np.float32)
        table[f"image{k}.png"] = [float(b) for b in rng.integers(0, 2, 12)] + [float(s) for s in sticks]
    (folder / "actions.json").write_text(json.dumps(table))
    (folder / "Layer_Image").mkdir()
    return frames, table


def test_reads_demonstrator_folder(tmp_path):
    frames, table = write_demonstrator(tmp_path / "Examples" / "landslide", t=10)
    (ep,) = list(open_episodes(tmp_path / "Examples"))
    assert np.array_equal(ep.frames(), frames)  # image10 would sort before image2 as text; order is numeric
    expected = np.array([table[f"image{k}.png"] for k in range(10)], np.float32)
    assert np.array_equal(ep.wham_actions, controller.to_wham(expected))
    assert np.allclose(ep.actions, expected)


def test_bad_demonstrator_image_names_the_file(tmp_path):
    from PIL import Image

    write_demonstrator(tmp_path / "demo", t=3)
    Image.new("RGB", (320, 240)).save(tmp_path / "demo" / "image1.png")
    with pytest.raises(EpisodeFormatError, match=r"image1\.png.*300x180"):
        list(open_episodes(tmp_path / "demo"))


def test_open_episodes_finds_everything_and_windows_lazily(tmp_path):
    (tmp_path / "a").mkdir()
    write_episode(tmp_path / "a" / "e0.npz", synthetic_episode(t=9, seed=1))
    write_episode(tmp_path / "a" / "e1.npz", synthetic_episode(t=4, seed=2))
    write_demonstrator(tmp_path / "b" / "demo", t=10)
    data = open_episodes(tmp_path)
    assert len(data) == 3
    assert [len(ep) for ep in data] == [9, 4, 10]
    windows = list(data.windows(context=3))  # 4 steps each, no overlap
    assert [(os.path.basename(w.source), w.start) for w in windows] == [
        ("e0.npz", 0), ("e0.npz", 4), ("e1.npz", 0), ("demo", 0), ("demo", 4)
    ]
    w = windows[1]
    assert w.images.shape == (4, 3, 180, 300) and w.wham_actions.shape == (4, 16)
    assert np.array_equal(w.images, data[0].images[4:8])
    assert len(list(data.windows(context=3, stride=1))) == 6 + 1 + 7
    shuffled = list(data.windows(context=3, shuffle=True, rng=np.random.default_rng(0)))
    assert sorted((w.source, w.start) for w in shuffled) == sorted((w.source, w.start) for w in windows)
    assert len(open_episodes([tmp_path / "a" / "e1.npz", tmp_path / "b"])) == 2
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_episodes(tmp_path / "nowhere")


# -- recorder (real game) ------------------------------------------------------------


def _record(out, **kw):
    from wham_gym.games.recorder import record

    args = dict(scenario="deathmatch", episodes=3, policy="explore", workers=1, max_steps=15, seed=4, progress=False)
    args.update(kw)
    return record(str(out), **args)


def test_recorder_round_trip_and_replay(tmp_path):
    pytest.importorskip("vizdoom")
    from wham_gym.games.doom import DoomEnv

    manifest = _record(tmp_path, episodes=2)
    files = sorted(f for f in os.listdir(tmp_path))
    assert files == ["episode_000000.npz", "episode_000001.npz", "manifest.json"]
    assert manifest["total_episodes"] == 2 and manifest["total_frames"] == sum(e["frames"] for e in manifest["episodes"])
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["episodes"] == manifest["episodes"]
    from wham_gym.games.recorder import sha256

    episodes = list(open_episodes(tmp_path))
    for entry, ep in zip(manifest["episodes"], episodes):
        assert sha256(str(tmp_path / entry["file"])) == entry["sha256"]
        assert len(ep) == entry["frames"]
        assert len(ep) == 15 or ep.terminated[-1]
        assert ep.wham_actions.dtype == np.float32 and set(np.unique(ep.wham_actions[:, 12:])) <= set(range(11))
        assert ep.scenario == "deathmatch" and ep.truncated[-1] != ep.terminated[-1]
        assert "position_x" in ep.game_variable_names
    assert episodes[0].seed != episodes[1].seed

    # ground truth: (scenario, seed, actions) replays the recorded frames exactly
    ep = episodes[1]
    env = DoomEnv(scenario=ep.scenario, max_steps=15)
    try:
        obs, _ = env.reset(seed=ep.seed)
        for t in range(len(ep)):
            assert np.array_equal(obs.transpose(2, 0, 1), ep.images[t]), t
            obs, reward, *_ = env.step(ep.actions[t])
            assert reward == ep.rewards[t]
    finally:
        env.close()


def test_interrupted_recording_resumes_and_keeps_finished_episodes(tmp_path):
    pytest.importorskip("vizdoom")
    first = _record(tmp_path)
    kept = {n: (tmp_path / n).read_bytes() for n in ("episode_000000.npz", "episode_000002.npz")}
    mtimes = {n: os.stat(tmp_path / n).st_mtime_ns for n in kept}
    lost_hash = first["episodes"][1]["sha256"]
    # simulate a kill mid-write: episode 1 only exists as a temp file, the manifest still lists it
    os.replace(tmp_path / "episode_000001.npz", tmp_path / "episode_000001.npz.x1y2z3.tmp")
    (tmp_path / "episode_000001.npz.x1y2z3.tmp").write_bytes(b"partial")

    second = _record(tmp_path, workers=2)  # resuming with another worker count changes nothing
    assert sorted(os.listdir(tmp_path)) == ["episode_000000.npz", "episode_000001.npz", "episode_000002.npz", "manifest.json"]
    for name, data in kept.items():
        assert (tmp_path / name).read_bytes() == data
        assert os.stat(tmp_path / name).st_mtime_ns == mtimes[name]  # not rewritten
    assert second["last_run"]["frames"] == first["episodes"][1]["frames"]  # only the missing one was played
    assert second["episodes"][1]["sha256"] == lost_hash  # seeds depend on the index alone: same bytes again
    assert [e["sha256"] for e in second["episodes"]] == [e["sha256"] for e in first["episodes"]]

    # a file that finished but missed the manifest update is adopted, not re-recorded
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["episodes"] = manifest["episodes"][:1]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    third = _record(tmp_path)
    assert third["last_run"]["frames"] == 0 and third["total_episodes"] == 3

    with pytest.raises(ValueError, match="other settings.*scenario"):
        _record(tmp_path, scenario="defend_the_center")


def test_mirrored_episode_flips_the_scene_and_the_horizontal_sticks(tmp_path):
    from wham_gym.data.augment import MIRRORED_AXES, STATUS_BAR_ROWS, mirror_episode, mirror_recording

    ep = synthetic_episode(t=6, seed=4)
    m = mirror_episode(ep)
    top = 180 - STATUS_BAR_ROWS
    assert np.array_equal(m.images[:, :, :top], ep.images[:, :, :top, ::-1])
    assert np.array_equal(m.images[:, :, top:], ep.images[:, :, top:])  # the status bar stays readable
    assert MIRRORED_AXES == (controller.index_of("left_stick_x"), controller.index_of("right_stick_x"))
    # In controller space: strafe and turn negated, every other dimension as it was.
    want = ep.actions.copy()
    want[:, list(MIRRORED_AXES)] *= -1
    assert np.array_equal(m.actions, want)
    assert m.game_variables is None and m.extra["mirrored"]
    assert np.array_equal(m.rewards, ep.rewards) and np.array_equal(m.terminated, ep.terminated)
    twice = mirror_episode(m)
    assert np.array_equal(twice.images, ep.images) and np.array_equal(twice.wham_actions, ep.wham_actions)
    assert np.array_equal(mirror_episode(ep, keep_bottom=0).images, ep.images[..., ::-1])
    with pytest.raises(ValueError, match="keep_bottom"):
        mirror_episode(ep, keep_bottom=180)

    src, out = tmp_path / "rec", tmp_path / "rec_mirror"
    src.mkdir()
    for i in range(2):
        write_episode(src / f"episode_{i:06d}.npz", synthetic_episode(t=5, seed=i))
    assert mirror_recording(src, out, progress=False) == 2
    assert mirror_recording(src, out, progress=False) == 0  # resumable: finished episodes are kept
    back = read_episode(out / "episode_000001.npz")
    assert np.array_equal(back.wham_actions, mirror_episode(synthetic_episode(t=5, seed=1)).wham_actions)
    with pytest.raises(ValueError, match="must differ"):
        mirror_recording(src, src, progress=False)
    with pytest.raises(FileNotFoundError, match="no episode"):
        mirror_recording(tmp_path / "nothing", out, progress=False)

    from wham_gym.commands.main import main  # the command: whole frames mirrored with --keep-bottom 0
    assert main(["mirror", str(src), str(tmp_path / "whole"), "--keep-bottom", "0", "--no-progress"]) == 0
    whole = read_episode(tmp_path / "whole" / "episode_000000.npz")
    assert np.array_equal(whole.images, read_episode(src / "episode_000000.npz").images[..., ::-1])
