"""The transformers peer (wham_gym.measure.peer): the same function as our GPT, the engine's argmax tokens."""

import numpy as np
import pytest
import torch
import transformers  # noqa: F401  - in the [test] extra: the peer's tests run, never skip

from wham_gym.engine import DreamEngine
from wham_gym.measure import benchmark, peer
from wham_gym.model import build_model, load_model
from wham_gym.model.config import ViTTokenizerConfig, make_config


def _model(version: int, bias: bool, seed: int = 0):
    tok = ViTTokenizerConfig(width=300, height=180, patch_size=30, transf_dim=32, embedding_dim=8, num_layers=1,
                             head_size=16, vocab_size=64)
    m = build_model(make_config(tok, n_layer=2, n_head=4, n_embd=32, version=version, bias=bias), seed=seed)
    with torch.no_grad():  # random non-trivial norms and biases: a mapping that drops one must show
        for name, p in m.gpt.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            else:
                p.mul_(4.0)  # sharpen the random GPT so argmax has clear winners
    return m


@pytest.mark.parametrize("version, bias", [(1, True), (1, False), (2, True), (2, False)])
def test_gpt2_mapping_gives_our_logits(version, bias):
    m = _model(version, bias)
    ids = torch.randint(0, m.config.vocab_size, (3, m.config.gpt.block_size))
    with torch.no_grad():
        ours = m.gpt(ids)
        theirs = peer.to_gpt2(m.gpt)(ids).logits
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_window_ids_are_what_the_engine_prefills():
    m = load_model("tiny")
    tokens, acts = benchmark.full_window_prompt(m, 2, seed=3)
    a = benchmark.random_actions(np.random.default_rng(4), 2)
    eng = DreamEngine(m, 2)
    eng.reset(tokens=tokens, actions=acts)
    eng.actions[:, -1] = eng._action_ids(a)
    seqs = eng._inputs()[0]
    assert torch.equal(peer.window_ids(m, tokens, torch.cat([acts, a[:, None]], 1)), seqs)


@pytest.mark.parametrize("version", [1, 2])
def test_greedy_generation_equals_engine_argmax(version):
    m = _model(version, bias=True, seed=version)
    tokens, acts = benchmark.full_window_prompt(m, 3, seed=1)
    rng = np.random.default_rng(2)
    eng = DreamEngine(m, 3, deterministic=True)
    eng.reset(tokens=tokens, actions=acts)
    gpt2 = peer.to_gpt2(m.gpt)
    for _ in range(2):  # the window slides by the generated frame
        a = benchmark.random_actions(rng, 3)
        got = peer.generate_frames(gpt2, m, tokens, torch.cat([acts, a[:, None]], 1))
        want = eng.step(a, decode=False).tokens
        assert got.shape == (3, m.config.tokens_per_image)
        assert torch.equal(got, want)
        assert int(got[:, 0].min()) >= 1  # the valid range: never codebook index 0 as a frame's first token
        tokens = torch.cat([tokens[:, 1:], got[:, None]], 1)
        acts = torch.cat([acts, a[:, None]], 1)[:, 1:]


def test_bench_runs_the_peer(tmp_path, capsys):
    import argparse

    from wham_gym.commands.bench import add_arguments, run_bench

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "tiny", "--num-envs", "2", "--steps", "1", "--warmup", "0",
                              "--engine", "tokens", "--no-reference", "--peer", "--out", str(tmp_path),
                              "--no-progress"])
    assert run_bench(args) == 0
    assert "| transformers | 2 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="subset"):
        benchmark.benchmark(model="tiny", variants=("engine-tokens", "vllm"), progress=False)


def test_bench_peer_without_transformers_says_what_to_install(monkeypatch, capsys):
    from wham_gym.commands.main import main

    def missing():
        raise ImportError("the transformers peer needs Hugging Face transformers: pip install transformers")

    monkeypatch.setattr(peer, "require_transformers", missing)
    assert main(["bench", "--model", "tiny", "--peer", "--num-envs", "1", "--no-progress", "--threads", "1"]) == 1
    assert "pip install transformers" in capsys.readouterr().err
