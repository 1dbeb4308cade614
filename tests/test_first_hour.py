"""A newcomer's first hour with a fresh clone (issue 16, item 4): each stumble gets the right
behaviour or an error that says what was expected, what was received and how to fix it."""

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import wham_gym
from wham_gym import load_model
from wham_gym.commands.main import main
from wham_gym.data.episodes import Episode, EpisodeFormatError, read_episode, write_episode
from wham_gym.data.reader import load_episode
from wham_gym.model import DEFAULT_MODEL_DIR, DeviceError, resolve_device

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXPECTED = "expected a wham-gym episode .npz"


def episode(t=6, seed=0):
    rng = np.random.default_rng(seed)
    actions = np.zeros((t, 16), np.float32)
    actions[:, 12:] = 5
    return Episode(images=rng.integers(0, 256, (t, 3, 180, 300), dtype=np.uint8), wham_actions=actions,
                   scenario="defend_the_center")


# ------------------------------------------------------------ 1, 2: devices
def test_device_none_means_cpu(one_thread):
    from wham_gym.dream import dream

    assert load_model("tiny", device=None).device == torch.device("cpu")
    d = dream("default", steps=2, device=None, progress=False)  # the README's first call
    assert d.frames.shape[:2] == (1, 3) and str(d.info["device"]) == "cpu"


def test_cuda_on_a_cpu_only_torch_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = rf"device 'cuda' requested but this torch build has no CUDA \(torch {re.escape(torch.__version__)}\); " \
              r"use --device cpu .* or install a CUDA build of torch"
    with pytest.raises(DeviceError, match=message):
        load_model("tiny", device="cuda")
    with pytest.raises(ValueError, match="has no CUDA"):  # a ValueError: the CLI boundary catches it
        load_model("default", device=torch.device("cuda:0"))
    for argv in (["dream", "--model", "tiny", "--device", "cuda", "--out", str(tmp_path / "d")],
                 ["train", "all", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), "--out",
                  str(tmp_path / "m"), "--device", "cuda"],
                 ["bench", "--device", "cuda", "--out", str(tmp_path / "b")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "has no CUDA" in err and "Traceback" not in err, argv


def test_other_device_problems_say_what_to_do(monkeypatch):
    with pytest.raises(DeviceError, match=r"'gpu' is not a torch device; expected e\.g\. 'cpu', 'cuda'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="torch sees no CUDA GPU .*CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"'cuda:3' requested but only 1 CUDA GPU\(s\) are visible"):
        resolve_device("cuda:3")
    assert resolve_device(None) == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------ 3, 4: the CLI
def test_a_reader_that_goes_away_is_not_a_traceback():
    """`wham-gym info | head -1`: the pipe closes before wham-gym writes."""
    proc = subprocess.Popen([sys.executable, "-m", "wham_gym", "info", "tiny"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()  # no reader from the start: every write to stdout fails with EPIPE
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    assert err == "" and proc.returncode == 1  # Python's documented recipe: quiet, exit status 1


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"wham-gym {wham_gym.__version__}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert wham_gym.__version__ == project["version"]  # one version, whichever file a release bumps


# ------------------------------------------------------------ 5: the resize option each API has
def test_a_wrong_size_prompt_names_the_option_of_the_api_in_use(tiny, one_thread, tmp_path, capsys):
    from wham_gym.dream import load_prompt
    from wham_gym.env import WHAMVectorEnv
    from wham_gym.prompts import Prompt

    small = np.random.default_rng(0).integers(0, 256, (2, 90, 150, 3), dtype=np.uint8)
    acts = np.zeros((1, 16), np.float32)
    with pytest.raises(ValueError, match=r"pass resize_prompt=True \(wham-gym dream: --resize-prompt\) to resize") as e:
        load_prompt(Prompt(small, acts), tiny)
    assert "resize_prompts" not in str(e.value)
    Image.fromarray(small[0]).save(tmp_path / "small.png")
    assert main(["dream", "--model", "tiny", "--prompt", str(tmp_path / "small.png"), "--steps", "1",
                 "--out", str(tmp_path / "out")]) == 1
    assert "--resize-prompt" in capsys.readouterr().err
    env = WHAMVectorEnv(1, tiny)
    with pytest.raises(ValueError, match=r"pass resize_prompts=True to resize"):
        env.reset(options={"prompt": (small, acts)})
    env.close()


# ------------------------------------------------------------ 6: files that are not episodes
def test_files_that_are_not_episodes_are_not_called_corrupt(tmp_path):
    (tmp_path / "notes.txt").write_text("frames are in the other folder\n")
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    Image.fromarray(np.zeros((180, 300, 3), np.uint8)).save(tmp_path / "frame.png")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "folder").mkdir()
    cases = {"notes.txt": "the file is text", "weights.npz": r"missing \['images', 'actions'\] \(it holds \['w'\]\)",
             "frame.png": "a PNG image", "empty.npz": r"empty \(0 bytes\)", "array.npy": "a single .npy array",
             "folder": "not a Demonstrator folder"}
    for name, what in cases.items():
        with pytest.raises(EpisodeFormatError, match=what) as e:
            load_episode(str(tmp_path / name))
        message = str(e.value)
        assert message.startswith(str(tmp_path / name)) and EXPECTED in message and "Demonstrator folder" in message
        assert "delete" not in message and "corrupt" not in message, message


def test_only_a_damaged_episode_we_wrote_is_to_be_deleted(tmp_path):
    ours, theirs = tmp_path / "episode_000000.npz", tmp_path / "wham_sample.npz"
    write_episode(ours, episode())
    np.savez_compressed(theirs, images=episode().images, actions=episode().wham_actions)
    for path in (ours, theirs):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match=r"episode_000000\.npz: a wham-gym episode that is corrupt or "
                                                 r"truncated .*; delete it \(a recorder rerun re-records it\)"):
        read_episode(ours)
    with pytest.raises(EpisodeFormatError, match=r"wham_sample\.npz: cannot read this \.npz .*damaged or truncated") as e:
        read_episode(theirs)
    assert "delete" not in str(e.value) and EXPECTED in str(e.value)


# ------------------------------------------------------------ 7: NumPy in, torch out
def test_logits_take_numpy_like_encode_frames(tiny):
    ids = torch.randint(0, tiny.vocab.size, (1, 20))
    expected = tiny.logits(ids)
    for dtype in (np.int64, np.int32, np.uint16):
        got = tiny.logits(ids.numpy().astype(dtype))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and torch.equal(got, expected)
    with pytest.raises(ValueError, match=r"token_ids: expected integer ids .* float32"):
        tiny.logits(ids.numpy().astype(np.float32))
    for method in ("encode_frames", "decode_tokens", "logits", "action_ids"):
        assert "Returns a torch" in getattr(type(tiny), method).__doc__, method


# ------------------------------------------------------------ 8: channel-last prompts, both layouts read
def test_shipped_prompts_are_channel_last_and_compressed():
    files = sorted((DEFAULT_MODEL_DIR / "prompts").glob("prompt_*.npz"))
    assert len(files) == 4
    for f in files:
        with np.load(f) as data:
            assert data["images"].shape[1:] == (180, 300, 3) and data["images"].dtype == np.uint8
        with zipfile.ZipFile(f) as zf:
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
        assert f.stat().st_size < 600_000
        ep = read_episode(f)
        assert ep.frames().shape[1:] == (180, 300, 3) and ep.frames().flags.c_contiguous and ep.frames().std() > 10


def test_both_image_layouts_read_the_same(tmp_path):
    ep = episode()
    write_episode(tmp_path / "last.npz", ep, channels_last=True)
    write_episode(tmp_path / "first.npz", ep)  # the recorder's layout, and older prompt files
    np.savez_compressed(tmp_path / "wham.npz", images=ep.images, actions=ep.wham_actions,
                        states=np.zeros((len(ep), 4), np.float32))  # WHAM's dataset files are channel-first
    with np.load(tmp_path / "last.npz") as data:
        assert data["images"].shape == (6, 180, 300, 3)
    for name in ("last.npz", "first.npz", "wham.npz"):
        back = read_episode(tmp_path / name)
        assert np.array_equal(back.images, ep.images) and np.array_equal(back.frames(), ep.frames()), name
        assert np.array_equal(back.wham_actions, ep.wham_actions)


# ------------------------------------------------------------ 9, 10: trained models' names and cards
def test_default_name_of_a_trained_model_is_its_folder_never_the_shipped_one():
    from wham_gym.train.recipe import Recipe, default_model_name

    assert Recipe().name is None
    assert default_model_name("runs/m1") == "m1" and default_model_name("runs/m1/") == "m1"
    assert default_model_name("out/wham-doom-small") == "wham-doom-small-trained"
    assert default_model_name("wham_gym/assets/default") == "default-trained"
    assert default_model_name("x/tiny") == "tiny-trained"


def test_train_without_name_does_not_take_the_recipe_cards_name(monkeypatch, tmp_path):
    import wham_gym.train.recipe as recipe_module

    seen = []
    monkeypatch.setattr(recipe_module, "run_recipe", lambda data, run, out, recipe, **kw: seen.append(recipe.name))
    base = ["train", "all", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "m"),
            "--device", "cpu", "--recipe", str(DEFAULT_MODEL_DIR)]
    assert main(base) == 0 and main([*base, "--name", "mine"]) == 0
    assert seen == [None, "mine"]  # None: run_recipe names it after --out


def test_an_assembled_model_is_named_after_its_folder_and_its_card_holds_no_machine_paths(tmp_path, one_thread):
    from wham_gym.model import build_model
    from wham_gym.model.config import ViTTokenizerConfig
    from wham_gym.train.recipe import Recipe, assemble
    from wham_gym.train.trainer import save_checkpoint

    data = tmp_path / "recordings" / "dtc"
    data.mkdir(parents=True)
    for i in range(3):
        write_episode(data / f"episode_{i:06d}.npz", episode(seed=i))
    tok = ViTTokenizerConfig(width=300, height=180, patch_size=30, transf_dim=32, embedding_dim=8, num_layers=1,
                             head_size=16, vocab_size=32)
    recipe = Recipe(tokenizer=tok, n_layer=1, n_head=2, n_embd=32, seq_len=4)
    model = build_model(recipe.model_config())
    for stage, module in (("tokenizer", model.tokenizer), ("world_model", model.gpt)):
        save_checkpoint(tmp_path / "run" / stage, 1, module, torch.optim.AdamW(module.parameters()), meta={})
    out = assemble(tmp_path / "run", tmp_path / "models" / "wham-doom-small", recipe, data=data)
    loaded = load_model(out)
    assert loaded.card["name"] == loaded.config.name == "wham-doom-small-trained"
    assert loaded.card["recipe"]["name"] == "wham-doom-small-trained"
    assert loaded.card["data"] == "dtc"  # not /tmp/.../recordings/dtc
    text = (out / "card.json").read_text()
    assert str(tmp_path) not in text and os.sep + "tmp" not in text
    for f in (out / "prompts").glob("*.npz"):  # shipped prompts are channel-last too
        with np.load(f) as z:
            assert z["images"].shape[1:] == (180, 300, 3)


def test_saved_and_converted_cards_record_relative_paths(tiny, tmp_path):
    from wham_gym.model.checkpoint import provenance_path, save_model

    out = tmp_path / "model"
    tiny.card = {**tiny.card, "source": str(tmp_path / "ckpts" / "WHAM_200M.ckpt")}
    save_model(tiny, out, card={"converted_from": str(tmp_path / "ckpts" / "WHAM_200M.ckpt"),
                                "data": str(out / "episodes")})
    card = json.loads((out / "card.json").read_text())
    assert card["source"] == card["converted_from"] == "WHAM_200M.ckpt"
    assert card["data"] == "episodes"  # inside the model directory: relative to it
    assert provenance_path(out / "a" / "b", out) == "a/b" and provenance_path("/work/data/dtc", out) == "dtc"
    shipped = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    assert not any(isinstance(v, str) and v.startswith("/") for v in shipped.values())
