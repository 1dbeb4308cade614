"""``wham-gym dream``: prompts, action sources, exported files, provenance, errors."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from wham_gym import controller, load_model
from wham_gym.dream.actions import make_action_source, read_actions_csv
from wham_gym.commands.main import main
from wham_gym.dream import dream, load_prompt
from wham_gym.dream.export import PROGRAM_NAME, export_dream, interpolate

T_EP = 16  # frames in the test episode


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """A recorded-style episode: moving stripes so frames differ, varied actions with sticks as bins."""
    rng = np.random.default_rng(0)
    images = np.zeros((T_EP, 3, 180, 300), np.uint8)
    for t in range(T_EP):
        images[t, :, :, (t * 17) % 300:] = 40 + 10 * t
        images[t, 1] = rng.integers(0, 255, (180, 300))
    actions = np.zeros((T_EP, 16), np.float32)
    actions[:, 0] = np.arange(T_EP) % 2
    actions[:, 12:] = rng.integers(0, 11, (T_EP, 4))
    path = tmp_path_factory.mktemp("ep") / "episode.npz"
    np.savez(path, images=images, actions=actions)
    return path, images.transpose(0, 2, 3, 1), controller.from_wham(actions)


def test_dream_shapes_and_prompt(tiny, one_thread, episode):
    path, frames, actions = episode
    d = dream(tiny, str(path), steps=3, actions="random", num=2, seed=1, context=4, start=2, progress=False)
    assert d.frames.shape == (2, 4, 180, 300, 3) and d.frames.dtype == np.uint8
    assert d.actions.shape == d.predicted.shape == (2, 3, 16) and d.nll.shape == (2, 3)
    np.testing.assert_array_equal(d.context, frames[2:6])
    np.testing.assert_array_equal(d.frames[:, 0], np.stack([frames[5]] * 2))  # frame 0: the prompt's last
    assert not np.array_equal(d.frames[0, 1:], d.frames[1, 1:])  # the rollouts sample separately
    assert d.real is None and d.info["prompt_start"] == 2 and d.info["context_frames"] == 4
    np.testing.assert_array_equal(d.actions, controller.quantize(d.actions))


def test_export_files_sizes_and_counts(tiny, one_thread, episode, tmp_path):
    import av

    d = dream(tiny, str(episode[0]), steps=3, actions="random", num=2, seed=0, progress=False)
    out = export_dream(d, tmp_path / "out", upscale_factors=[2], playback_fps=30, progress=False)
    for k in range(2):
        pngs = sorted((out / f"dream_{k}" / "frames").glob("*.png"))
        assert [p.name for p in pngs] == [f"{t:04d}.png" for t in range(4)]
        np.testing.assert_array_equal(np.asarray(Image.open(pngs[3])), d.frames[k, 3])  # ours: unmarked, exact
        big = sorted((out / f"dream_{k}" / "frames_x2").glob("*.png"))
        assert len(big) == 4 and Image.open(big[0]).size == (600, 360)
        gif = Image.open(out / f"dream_{k}" / "dream.gif")
        assert gif.n_frames == 3 * 3 + 1 and gif.size == (600, 360)  # 30 fps: two blends between dreamt frames
        with av.open(str(out / f"dream_{k}" / "dream.mp4")) as c:
            video = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(video) == 10 and video[0].shape == (360, 600, 3)
        assert Image.open(out / f"dream_{k}" / "summary.png").size[0] > 600
    with open(out / "actions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["env", "step"] and rows[0][2:18] == list(controller.ACTION_NAMES)
    assert rows[0][18:] == [f"predicted_{n}" for n in controller.ACTION_NAMES]
    assert len(rows) == 1 + 2 * 3
    record = json.loads((out / "dream.json").read_text())
    assert record["num"] == 2 and record["steps"] == 3 and record["provenance"]["Model"] == "tiny"
    with np.load(out / "dream.npz") as z:
        np.testing.assert_array_equal(z["frames"], d.frames)
        np.testing.assert_array_equal(z["predicted"], d.predicted)


def test_actions_csv_round_trips_and_replays_the_dream(tiny, one_thread, episode, tmp_path):
    d = dream(tiny, str(episode[0]), steps=4, actions="random", num=2, seed=3, progress=False)
    out = export_dream(d, tmp_path / "a", gif=False, mp4=False, summary=False, progress=False)
    table = read_actions_csv(str(out / "actions.csv"))
    np.testing.assert_array_equal(table, d.actions)
    # The same seed with the logged actions dreams the same frames: the CSV loses nothing.
    again = dream(tiny, str(episode[0]), steps=4, actions=str(out / "actions.csv"), num=2, seed=3, progress=False)
    np.testing.assert_array_equal(again.frames, d.frames)
    np.testing.assert_array_equal(again.actions, d.actions)


def test_action_sources(tiny, one_thread, episode):
    path, frames, actions = episode
    fixed = dream(tiny, str(path), steps=3, actions="fixed:right_stick_x=1,button_0=1", seed=0, progress=False)
    want = np.zeros(16, np.float32)
    want[[0, 14]] = 1
    np.testing.assert_array_equal(fixed.actions[0], np.tile(want, (3, 1)))

    own = dream(tiny, str(path), steps=3, actions="model", num=2, seed=0, progress=False)
    np.testing.assert_array_equal(own.actions, own.predicted)  # the model acted

    rep = dream(tiny, str(path), steps=4, actions="replay", context=3, start=1, seed=0, progress=False)
    np.testing.assert_array_equal(rep.actions[0], actions[3:7])  # recorded actions after the prompt
    np.testing.assert_array_equal(rep.real, frames[3:8])  # the real continuation, frame 0 = the prompt's last


def test_json_actions(tmp_path):
    rows = np.zeros((5, 16), np.float32)
    rows[:, 12] = np.linspace(-1, 1, 5)
    (tmp_path / "list.json").write_text(json.dumps(rows.tolist()))
    (tmp_path / "server.json").write_text(json.dumps([{"action": r} for r in rows.tolist()]))
    (tmp_path / "demo.json").write_text(json.dumps({f"image{i}.png": r for i, r in enumerate(rows.tolist())}))
    for name in ("list", "server", "demo"):
        src = make_action_source(str(tmp_path / f"{name}.json"))
        src.start(2, 5, 0)
        np.testing.assert_array_equal(src(4, None), np.tile(rows[4], (2, 1)))


def test_replay_renders_real_beside_dream(tiny, one_thread, episode, tmp_path):
    d = dream(tiny, str(episode[0]), steps=2, actions="replay", seed=0, progress=False)
    out = export_dream(d, tmp_path / "r", mp4=False, summary=False, progress=False)
    assert len(list((out / "real" / "frames").glob("*.png"))) == 3
    assert Image.open(out / "dream_0" / "dream.gif").size == (600, 180)  # dream | real


def test_png_and_demonstrator_prompts(tiny, tmp_path):
    from PIL import Image

    paths = []
    for t in range(3):
        paths.append(str(tmp_path / f"f{t}.png"))
        Image.fromarray(np.full((180, 300, 3), 50 * t, np.uint8)).save(paths[-1])
    pe = load_prompt(paths, tiny)
    assert pe.prompt.frames.shape == (3, 180, 300, 3) and pe.prompt.actions.shape == (2, 16)
    assert int(pe.prompt.frames[2, 0, 0, 0]) == 100 and not pe.prompt.actions.any()
    folder = tmp_path / "demo"
    folder.mkdir()
    table = {}
    for t in range(4):
        Image.fromarray(np.full((180, 300, 3), 30 * t, np.uint8)).save(folder / f"image{t}.png")
        table[f"image{t}.png"] = [0.0] * 12 + [0.0, 0.0, 1.0, 0.0]
    (folder / "actions.json").write_text(json.dumps(table))
    pe = load_prompt(str(folder), tiny)
    assert len(pe.prompt) == 4 and pe.next_actions is None  # the whole folder is the prompt
    assert int(pe.prompt.frames[3, 0, 0, 0]) == 90 and (pe.prompt.actions[:, 14] == 1).all()


def official_tiny(tmp_path, monkeypatch):
    from official_ckpt import write_official_checkpoint

    from wham_gym.model.config import GPT_MODEL_SIZES

    from wham_gym.model import build_model
    from wham_gym.model.config import preset

    monkeypatch.setitem(GPT_MODEL_SIZES, "test-tiny", (2, 2, 32))  # tiny's GPT under an official-style size name
    path = write_official_checkpoint(build_model(preset("tiny"), seed=0), tmp_path / "WHAM_tiny.ckpt", model_size="test-tiny")
    return load_model(str(path))


def test_official_model_frames_carry_watermark_and_provenance(one_thread, episode, tmp_path, monkeypatch):
    import av

    model = official_tiny(tmp_path, monkeypatch)
    assert model.is_official
    d = dream(model, str(episode[0]), steps=2, seed=0, progress=False)
    out = export_dream(d, tmp_path / "w", summary=False, progress=False)
    png = Image.open(out / "dream_0" / "frames" / "0002.png")
    assert png.text["ProgramName"] == PROGRAM_NAME
    marked, raw = np.asarray(png), d.frames[0, 2]
    changed = np.argwhere((marked != raw).any(-1))
    assert len(changed) > 50  # the text is there ...
    assert changed[:, 0].min() >= 180 - 25 and changed[:, 0].max() < 180 - 5  # ... at the bottom ...
    assert changed[:, 1].min() >= 300 - 140 and changed[:, 1].max() < 300 - 8  # ... right, 10 px in
    assert (marked[changed[:, 0], changed[:, 1]] == 255).all(-1).sum() > 20  # in white
    gif = Image.open(out / "dream_0" / "dream.gif")
    assert PROGRAM_NAME.encode() in gif.info["comment"]
    gif.seek(1)
    assert (np.asarray(gif.convert("RGB"))[160:175, 170:290] == 255).all(-1).sum() > 20
    with av.open(str(out / "dream_0" / "dream.mp4")) as c:
        assert c.metadata.get("title") == PROGRAM_NAME


def test_our_model_is_labelled_not_watermarked(tiny, one_thread, episode, tmp_path):
    d = dream(tiny, str(episode[0]), steps=1, seed=0, progress=False)
    out = export_dream(d, tmp_path / "o", gif=False, mp4=False, summary=False, progress=False)
    png = Image.open(out / "dream_0" / "frames" / "0001.png")
    assert "ProgramName" not in png.text and png.text["Model"] == "tiny"
    np.testing.assert_array_equal(np.asarray(png), d.frames[0, 1])


def test_clear_errors(tiny, one_thread, episode, tmp_path):
    path = str(episode[0])
    with pytest.raises(FileNotFoundError, match="nope"):
        dream(tiny, str(tmp_path / "nope.npz"), steps=1, progress=False)
    with pytest.raises(ValueError, match="shorter than needed"):
        dream(tiny, path, steps=1, start=T_EP - 3, progress=False)
    with pytest.raises(ValueError, match="holds 11 steps"):  # replay past the episode's end
        dream(tiny, path, steps=12, actions="replay", context=5, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("left_stick_x,foo\n1,2\n")
    with pytest.raises(ValueError, match="missing controller columns"):
        dream(tiny, path, steps=1, actions=str(bad), progress=False)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable action file"):
        dream(tiny, path, steps=1, actions=str(tmp_path / "bad.json"), progress=False)
    with pytest.raises(ValueError, match="unknown controller dimension .warp."):
        dream(tiny, path, steps=1, actions="fixed:warp=1", progress=False)
    with pytest.raises(ValueError, match="replay needs"):
        dream(tiny, None, steps=1, actions="replay", progress=False)
    (tmp_path / "taken").mkdir()
    d = dream(tiny, path, steps=1, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_dream(d, tmp_path / "taken", progress=False)
    assert main(["dream", "--model", "tiny", "--prompt", path, "--steps", "1", "--out", str(tmp_path / "taken")]) == 1


def test_interpolate_is_a_cross_fade():
    a = np.zeros((2, 2, 2, 3), np.uint8)
    a[1] = 90
    mid = interpolate(a, 3)
    assert mid.shape[0] == 4 and [int(m[0, 0, 0]) for m in mid] == [0, 30, 60, 90]


def test_cli_dream_and_demo(one_thread, episode, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["dream", "--model", "tiny", "--prompt", str(episode[0]), "--steps", "2", "--num", "2",
                 "--actions", "fixed:left_stick_y=1", "--no-mp4", "--out", str(out)]) == 0
    assert len(list(out.glob("dream_*/frames/*.png"))) == 2 * 3 and (out / "dream_1" / "dream.gif").is_file()
    wrote = capsys.readouterr().out.splitlines()[-1]  # the files it names are the files it wrote
    assert "dream.gif" in wrote and "summary.png" in wrote and "dream.json" in wrote and "dream.mp4" not in wrote
    # The README's main job, on the shipped default model.
    demo = tmp_path / "demo"
    assert main(["demo", "--steps", "2", "--num", "2", "--out", str(demo)]) == 0
    record = json.loads((demo / "dream.json").read_text())
    assert record["model"] == "wham-doom-small" and record["actions"] == "random"
    assert (demo / "dream_1" / "dream.mp4").stat().st_size > 0 and len(list(demo.glob("dream_0/frames_x2/*"))) == 3
