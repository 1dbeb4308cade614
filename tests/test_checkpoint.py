"""Official-format checkpoints load exactly and safely; our own format round-trips with no pickle."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from wham_gym import load_model
from wham_gym.model import build_model, checkpoint, preset
from wham_gym.model.config import GPT_MODEL_SIZES, ViTTokenizerConfig, make_config

from official_ckpt import write_official_checkpoint


# Real WHAM tokenizers are multi-layer ViTs; a 1-layer one would hide layer-counting bugs.
VIT_3_LAYERS = ViTTokenizerConfig(width=300, height=180, patch_size=30, transf_dim=32, embedding_dim=8,
                                  num_layers=3, head_size=16, vocab_size=64)


def variant(kind, version, bias):
    tok = VIT_3_LAYERS if kind == "vit" else preset("tiny-taming").tokenizer
    return make_config(tok, n_layer=2, n_head=2, n_embd=32, version=version, bias=bias, name=f"{kind}-v{version}")


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


def test_hyper_parameters_keep_numpy_and_paths_as_plain_data(tmp_path):
    # Protocol 2 rebuilds numpy payloads through _codecs.encode; paths become pure paths.
    source = build_model(variant("vit", 1, True))
    path = write_official_checkpoint(source, tmp_path / "a.ckpt", model_size="test-tiny", spaces=True)
    ckpt = checkpoint.read_official(path)
    v = ckpt["hyper_parameters"]["variant"]
    assert v["lr"] == np.float32(3e-4) and v["lr"].dtype == np.float32
    np.testing.assert_array_equal(v["image_mean"], [0.485, 0.456, 0.406])
    np.testing.assert_array_equal(v["stick_bins"], np.linspace(-1, 1, 11, dtype=np.float32))
    assert v["seed"] == 1337 and v["empty"] == b"" and v["device"] == torch.device("cpu")
    assert str(v["data_path"]) == "/mnt/data/bleeding-edge/train"
    assert type(v["data_path"]).__name__ == "PurePosixPath"  # no filesystem access possible
    images = ckpt["hyper_parameters"]["context_encoder_args"]["images"]
    assert str(images.pl_kwargs["ckpt_path"]) == "/mnt/checkpoints/vqgan/last.ckpt"
    space = ckpt["hyper_parameters"]["predictor_args"].pl_kwargs["context_space"]["images"]
    assert space.stub_name == "TensorSpace" and space._dtype == torch.long
    # The optimizer state is there (and large in real files); the model loads without it mattering.
    assert len(ckpt["optimizer_states"][0]["state"]) > 10
    model, report = checkpoint.load_official(path)
    assert report["unexpected"] == [] and model.config.tokenizer.num_layers == 3


def test_200m_shape_loads_and_converts(tmp_path, monkeypatch):
    """WHAM 200M's token geometry (ViT 300x180, 10-px patches, 540 tokens, codebook 16384,
    vocab 16452, block 5560), at reduced depth and width so it fits a test."""
    tok = ViTTokenizerConfig(width=300, height=180, patch_size=10, transf_dim=32, embedding_dim=8,
                             num_layers=2, head_size=16, vocab_size=16384)
    cfg = make_config(tok, n_layer=2, n_head=2, n_embd=32, name="wham-200m-shape")
    assert (tok.tokens_per_image, cfg.gpt.vocab_size, cfg.gpt.block_size) == (540, 16452, 5560)
    source = build_model(cfg, seed=3)
    path = write_official_checkpoint(source, tmp_path / "WHAM_200M.ckpt", model_size="test-tiny", spaces=True)
    model, report = checkpoint.load_official(path)
    assert report["unexpected"] == []
    assert model.config.gpt == cfg.gpt and model.config.tokenizer == tok
    frames, ids = sample_inputs(source)
    for a, b in zip(outputs(source, frames, ids), outputs(model, frames, ids)):
        assert torch.equal(a, b)
    out = checkpoint.convert(path, tmp_path / "converted")  # what `wham-gym convert` runs
    assert load_model(out).config.tokenizer.num_layers == 2


def test_cli_convert_multilayer_vit_with_numpy_hyper_parameters(tmp_path, capsys):
    from wham_gym.commands.main import main

    source = build_model(variant("vit", 2, False))
    path = write_official_checkpoint(source, tmp_path / "WHAM_1.6B_v1.ckpt", model_size="test-tiny")
    assert main(["convert", str(path), str(tmp_path / "out")]) in (0, None)
    converted = load_model(tmp_path / "out")
    frames, ids = sample_inputs(source)
    assert torch.equal(converted.logits(ids), source.logits(ids))
    assert converted.config.tokenizer.num_layers == 3


class _Payload:
    """Pickles to an arbitrary call: ``(func, args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_codecs_encode_is_allowed_only_as_protocol_2_bytes(tmp_path):
    import _codecs
    import codecs

    marker = tmp_path / "pwned"
    # The form protocol 2 writes works ...
    blob = pickle.dumps({"b": b"\x00\xffraw"}, protocol=2)
    assert b"_codecs" in blob
    assert checkpoint.RestrictedUnpickler(__import__("io").BytesIO(blob)).load() == {"b": b"\x00\xffraw"}
    # ... any other codec (a codec lookup imports modules) or argument type is refused,
    for payload in (_Payload(_codecs.encode, ("x", "rot13")), _Payload(codecs.encode, (b"x", "zlib")),
                    _Payload(_codecs.encode, ("x", "latin1", "ignore")), _Payload(bytes, (10**9,))):
        path = tmp_path / "p.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": {"x": payload}}, path, pickle_protocol=2)
        with pytest.raises(checkpoint.CheckpointError, match="refused"):
            checkpoint.read_official(path)
    # ... and _codecs.encode opens no path to running code: a payload mixing it with os.system
    # is refused at the os.system global, before anything runs.
    evil = {"ok": b"bytes", "cmd": _Payload(os.system, (f"touch {marker}",))}
    torch.save({"state_dict": {}, "hyper_parameters": evil}, tmp_path / "evil.ckpt", pickle_protocol=2)
    with pytest.raises(checkpoint.CheckpointError, match=r"refused global (posix|nt)\.system"):
        checkpoint.read_official(tmp_path / "evil.ckpt")
    assert not marker.exists()
