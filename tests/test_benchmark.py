"""Benchmark: the reference algorithm agrees with the engine, the floor arithmetic, the sweep's outputs."""

import csv
import json

import numpy as np
import pytest
import torch

from wham_gym.measure import benchmark
from wham_gym import load_model
from wham_gym.engine import DreamEngine
from wham_gym.model import preset
from wham_gym.measure.reference import ReferenceDreamer

H100_BANDWIDTH, H100_BF16_FLOPS = 3.35e12, 990e12


@pytest.fixture(scope="module")
def model64():
    m = load_model("tiny", dtype=torch.float64)
    with torch.no_grad():  # sharpen the random GPT so argmax has clear winners
        for p in m.gpt.parameters():
            p.mul_(4.0)
    return m


def test_reference_algorithm_argmax_equals_engine(model64):
    # Both are WHAM's procedure; with argmax sampling they must agree token for token,
    # through the window filling up (P = 8 frames, window 9) and then sliding.
    rng = np.random.default_rng(0)
    N, P = 3, 8
    tokens = torch.from_numpy(rng.integers(0, model64.config.image_vocab_size, (N, P, model64.config.tokens_per_image)))
    prompt_actions = benchmark.random_actions(rng, N, P - 1)
    eng = DreamEngine(model64, N, deterministic=True)
    eng.reset(None, tokens=tokens, actions=prompt_actions)
    ref = ReferenceDreamer(model64, N, deterministic=True)
    ref.reset(tokens, prompt_actions)
    for _ in range(3):
        a = benchmark.random_actions(rng, N)
        assert torch.equal(eng.step(a, decode=False).tokens, ref.step(a, decode=False).tokens)


def test_reference_algorithm_sampling_in_range_and_seeded(model64):
    tokens, acts = benchmark.full_window_prompt(model64, 2, seed=1)
    a = benchmark.random_actions(np.random.default_rng(1), 2)
    outs = []
    for _ in range(2):
        ref = ReferenceDreamer(model64, 2, temperature=0.9, top_k=5, seed=3)
        ref.reset(tokens, acts)
        outs.append(ref.step(a, decode=True))
    assert torch.equal(outs[0].tokens, outs[1].tokens)
    assert outs[0].tokens[:, 0].min() >= 1  # WHAM's first-token range excludes codebook index 0
    assert outs[0].tokens.max() < model64.config.image_vocab_size
    assert outs[0].frames.shape == (2, 180, 300, 3) and outs[0].frames.dtype == torch.uint8
    vocab = model64.vocab
    lo = torch.as_tensor(vocab.range_low[-16:] - vocab.action_offset)
    hi = torch.as_tensor(vocab.range_high[-16:] - vocab.action_offset)
    assert ((outs[0].sampled_actions >= lo) & (outs[0].sampled_actions <= hi)).all()


def test_reference_rejects_bad_input(model64):
    ref = ReferenceDreamer(model64, 2)
    with pytest.raises(RuntimeError, match="reset"):
        ref.step(torch.zeros(2, 16))
    with pytest.raises(ValueError, match="equal-length"):
        ref.reset(torch.zeros(3, 2, model64.config.tokens_per_image, dtype=torch.long))
    with pytest.raises(ValueError, match="actions"):
        ref.reset(torch.zeros(2, 2, model64.config.tokens_per_image, dtype=torch.long))


def test_parameter_count_matches_wham_1_6b():
    assert benchmark.gpt_weight_counts(preset("wham-1.6b").gpt)["total"] == 1_580_262_912  # §3 sanity check
    tiny = load_model("tiny")
    assert benchmark.gpt_weight_counts(tiny.config.gpt)["total"] == tiny.gpt.num_parameters()


def test_floor_arithmetic_on_h100_numbers():
    cfg = preset("wham-1.6b")
    big = benchmark.floor(cfg, None, 2, H100_BANDWIDTH, H100_BF16_FLOPS)
    # 540 tokens, token g attends to 5004 + g positions; 24 * 2 * 2304 * 2 bytes per position.
    assert big.kv_positions == 540 * 5004 + 540 * 539 // 2
    assert big.kv_bytes == pytest.approx(big.kv_positions * 24 * 2 * 2304 * 2)
    assert big.bound == "bytes"  # decoding is bound by KV-cache reads, not FLOPs
    assert big.env_frames_per_s == pytest.approx(5.32, rel=0.01)  # KV reads only (N -> infinity)
    # The "1.6B ~ 4.2, 200M ~ 15" is this floor with the weight reads shared by about 10 slots.
    assert benchmark.floor(cfg, 10, 2, H100_BANDWIDTH, H100_BF16_FLOPS).env_frames_per_s == pytest.approx(4.2, rel=0.02)
    small = benchmark.floor(preset("wham-200m"), 10, 2, H100_BANDWIDTH, H100_BF16_FLOPS)
    assert small.env_frames_per_s == pytest.approx(15, rel=0.1)
    assert benchmark.floor(preset("wham-200m"), None, 2, H100_BANDWIDTH, H100_BF16_FLOPS).env_frames_per_s == \
        pytest.approx(17.95, rel=0.01)
    one = benchmark.floor(cfg, 1, 2, H100_BANDWIDTH, H100_BF16_FLOPS)
    assert one.env_frames_per_s < big.env_frames_per_s  # at N = 1 the weight reads dominate
    with pytest.raises(ValueError):
        benchmark.floor(cfg, 0, 2, H100_BANDWIDTH, H100_BF16_FLOPS)


def test_num_envs_parsing():
    assert benchmark.parse_num_envs("1,2,4") == [1, 2, 4]
    assert benchmark.doubling(20) == [1, 2, 4, 8, 16]
    for bad in ("0,1", "4,2", "a", ""):
        with pytest.raises(ValueError):
            benchmark.parse_num_envs(bad)


def test_tiny_sweep_writes_csv_and_json(tmp_path, capsys):
    import argparse

    from wham_gym.commands.bench import add_arguments, run_bench

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "tiny", "--num-envs", "1,2", "--steps", "2", "--warmup", "0",
                              "--engine", "tokens", "--out", str(tmp_path), "--no-progress"])
    assert run_bench(args) == 0
    out = capsys.readouterr().out
    assert "fraction of floor" in out

    csv_path = next(tmp_path.glob("*.csv"))
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == benchmark.CSV_COLUMNS
    assert {(r["variant"], int(r["num_envs"])) for r in rows} == {
        (v, n) for v in ("engine-tokens", "reference") for n in (1, 2)}
    assert all(float(r["env_frames_per_s"]) > 0 and float(r["fraction_of_floor"]) > 0 for r in rows)
    assert all(float(r["warmup_s"]) > 0 for r in rows)  # the model's first use at least: never free
    assert all(r["dtype"] == "float32" for r in rows if r["variant"] == "reference")

    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["meta"]["model"] == "tiny" and data["meta"]["bandwidth_B_per_s"] > 0
    assert len(data["rows"]) == len(rows)
    png = list(tmp_path.glob("*.png"))
    try:
        import matplotlib  # noqa: F401
        assert png
    except ImportError:
        assert not png and "matplotlib is not installed" in out


def test_modes_run_side_by_side_in_one_sweep():
    assert benchmark.parse_mode("exact") == ("exact", {})
    assert benchmark.parse_mode("diagonal+r5") == ("diagonal", {"refresh_every": 5})
    assert benchmark.parse_mode("exact+compile") == ("exact", {"compile": True})
    assert benchmark.parse_mode("speculative+compile+r3") == ("speculative", {"compile": True, "refresh_every": 3})
    for bad in ("parallel", "exact+r", "exact+rx", "exact+compile+compile", "diagonal+r2+r3", "exact+fast"):
        with pytest.raises(ValueError, match="DECODING"):
            benchmark.parse_mode(bad)
    result = benchmark.benchmark(model="tiny", num_envs=(2,), steps=1, warmup=0,
                                 variants=("engine-tokens", "reference"), modes=("exact", "diagonal+r2"),
                                 progress=False, log=lambda *a: None)
    assert [r["variant"] for r in result["rows"]] == ["engine-tokens", "engine-tokens diagonal+r2", "reference"]
    assert result["meta"]["modes"] == ["exact", "diagonal+r2"]
    with pytest.raises(ValueError, match="DECODING"):
        benchmark.benchmark(model="tiny", modes=("exact", "fast"), progress=False)


def test_step_ab_refuses_bad_arms_and_base_dirs_before_timing_anything(tmp_path):
    """benchmarks/step_ab.py checks every TREE:MODE arm, and a --base-dir that holds no wham_gym/, at the boundary:
    exit 2 with the expected form, before any tree is checked out or timed."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "step_ab.py"

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)

    bad_tree = run("--arms", "mine:exact")
    assert bad_tree.returncode == 2 and "TREE base or this" in bad_tree.stderr
    bad_mode = run("--arms", "this:exact,this:fast")
    assert bad_mode.returncode == 2 and "this:fast" in bad_mode.stderr and "DECODING" in bad_mode.stderr
    twice = run("--arms", "this:exact,this:exact")
    assert twice.returncode == 2 and "distinct" in twice.stderr
    empty = run("--base-dir", str(tmp_path), "--arms", "base:exact")
    assert empty.returncode == 2 and "wham_gym/__init__.py" in empty.stderr
