"""Official-format checkpoints load exactly and safely; our own format round-trips with no pickle."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from wham_gym import load_model
from wham_gym.model import build_model, checkpoint, preset
from wham_gym.model.config import GPT_MODEL_SIZES, make_config

from official_ckpt import write_official_checkpoint


def variant(kind, version, bias):
    base = preset("tiny" if kind == "vit" else "tiny-taming")
    return make_config(base.tokenizer, n_layer=2, n_head=2, n_embd=32, version=version, bias=bias, name=f"{kind}-v{version}")


@pytest.fixture(autouse=True)
def test_model_size(monkeypatch):
    # WHAM names GPT sizes by preset; register the test's small one like a user with a custom size would.
    monkeypatch.setitem(GPT_MODEL_SIZES, "test-tiny", (2, 2, 32))


def outputs(model, frames, ids):
    return model.encode_frames(frames), model.decode_tokens(model.encode_frames(frames)), model.logits(ids)


def sample_inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    c = model.config
    frames = rng.integers(0, 256, (2, c.frame_height, c.frame_width, 3), dtype=np.uint8)
    ids = torch.from_numpy(rng.integers(0, c.image_vocab_size, (2, 3 * c.tokens_per_step)))
    return frames, ids


@pytest.mark.parametrize("kind", ["vit", "taming"])
@pytest.mark.parametrize("version,bias", [(1, True), (2, False)])
@pytest.mark.parametrize("root", ["humanmodelling", "wham"])
def test_official_checkpoint_loads_exactly(tmp_path, kind, version, bias, root):
    source = build_model(variant(kind, version, bias), seed=version)
    path = write_official_checkpoint(source, tmp_path / "WHAM_test.ckpt", root=root, model_size="test-tiny",
                                     spec_version=(root == "wham"))
    assert not any(m.startswith(root + ".") for m in list(__import__("sys").modules))
    model, report = checkpoint.load_official(path)
    assert model.config.gpt == source.config.gpt and model.config.tokenizer == source.config.tokenizer
    assert report["unexpected"] == []
    assert any(k.endswith(".attn.bias") for k in report["ignored"])
    frames, ids = sample_inputs(source)
    for a, b in zip(outputs(source, frames, ids), outputs(model, frames, ids)):
        assert torch.equal(a, b)
    assert model.gpt.lm_head.weight is model.gpt.transformer.wte.weight
    assert model.is_official and not source.is_official

    # Convert once; the converted model loads without any pickle and gives the same outputs.
    out = checkpoint.convert(path, tmp_path / "converted")
    assert sorted(os.listdir(out)) == ["card.json", "config.json", "model.safetensors"]
    real_load = pickle.Unpickler
    try:
        pickle.Unpickler = None  # any unpickling attempt would now crash
        converted = load_model(out)
    finally:
        pickle.Unpickler = real_load
    for a, b in zip(outputs(source, frames, ids), outputs(converted, frames, ids)):
        assert torch.equal(a, b)
    assert converted.is_official  # provenance survives conversion (watermark duty)


def test_convert_to_bf16_halves_size(tmp_path):
    source = build_model(variant("vit", 1, True))
    path = write_official_checkpoint(source, tmp_path / "a.ckpt", model_size="test-tiny")
    full = checkpoint.convert(path, tmp_path / "fp32")
    half = checkpoint.convert(path, tmp_path / "bf16", dtype=torch.bfloat16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    m = load_model(half)
    assert m.dtype == torch.bfloat16
    with pytest.raises(FileExistsError, match="overwrite"):
        checkpoint.convert(path, tmp_path / "bf16")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Evil()}}, path)
    with pytest.raises(checkpoint.CheckpointError, match=r"evil\.ckpt.*refused global (posix|nt)\.system"):
        load_model(path)
    assert not marker.exists()

    class Eval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    torch.save({"state_dict": {}, "x": Eval()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused global builtins.eval"):
        checkpoint.read_official(path)
    assert not marker.exists()


def test_wham_named_globals_become_inert_stubs(tmp_path):
    # A global under WHAM's root is never imported or called for real.
    source = build_model(variant("vit", 1, True))
    path = write_official_checkpoint(source, tmp_path / "a.ckpt", model_size="test-tiny")
    ckpt = checkpoint.read_official(path)
    args = ckpt["hyper_parameters"]["predictor_args"]
    assert isinstance(args, checkpoint.Stub)
    assert args.pl_class.stub_name == "GPTTokenPredictor"
    assert args.pl_class.stub_module == "humanmodelling.models.wham_token_model.gpt_token_transformer_predictor"


def test_foreign_truncated_and_wrong_files(tmp_path):
    txt = tmp_path / "lfs.ckpt"
    txt.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(checkpoint.CheckpointError, match=r"lfs\.ckpt: not a PyTorch zip"):
        load_model(txt)

    source = build_model(variant("vit", 1, True))
    good = write_official_checkpoint(source, tmp_path / "good.ckpt", model_size="test-tiny")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match="cut.ckpt"):
        load_model(cut)

    other = tmp_path / "other.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    with pytest.raises(checkpoint.CheckpointError, match="state_dict"):
        load_model(other)

    with pytest.raises(FileNotFoundError, match="not a preset"):
        load_model(tmp_path / "missing.ckpt")


def test_hyper_parameters_disagreeing_with_weights(tmp_path, monkeypatch):
    source = build_model(variant("vit", 1, True))
    monkeypatch.setitem(GPT_MODEL_SIZES, "test-tiny", (2, 4, 64))  # wrong width for these weights
    path = write_official_checkpoint(source, tmp_path / "a.ckpt", model_size="test-tiny")
    with pytest.raises(checkpoint.CheckpointError, match="wte"):
        load_model(path)


def test_own_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint.load_own(tmp_path)
    model = build_model(preset("tiny"))
    out = checkpoint.save_model(model, tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    cfg["gpt"]["n_layer"] = 3
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(checkpoint.CheckpointError, match="do not match"):
        load_model(out)
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="safetensors"):
        load_model(out)


def test_save_is_atomic(tmp_path, monkeypatch):
    model = build_model(preset("tiny"))
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        checkpoint.save_model(model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []  # no half-written directory left behind
