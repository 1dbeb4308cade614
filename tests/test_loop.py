"""The whole pipeline, tiny and end to end (issue 21): record a few take_cover episodes, train a tiny world model,
train an agent in its dream, judge it in the game, record the agent, retrain the world model, train again."""

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("vizdoom")
pytest.importorskip("stable_baselines3")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain `pytest` puts tests/ on sys.path, not the repository
    sys.path.insert(0, str(REPO))

from agents import loop  # noqa: E402
from wham_gym.model.config import ViTTokenizerConfig  # noqa: E402
from wham_gym.train.recipe import Recipe  # noqa: E402
from wham_gym.train.trainer import TrainConfig  # noqa: E402

pytestmark = pytest.mark.doom


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def tiny_recipe_card(path: Path) -> Path:
    def cfg(steps, batch):
        return TrainConfig(steps=steps, batch_size=batch, warmup_steps=1, checkpoint_every=steps, validate_every=steps)

    recipe = Recipe(tokenizer=ViTTokenizerConfig(width=300, height=180, patch_size=60, transf_dim=16, embedding_dim=4,
                                                  num_layers=1, head_size=8, vocab_size=16),
                    n_layer=1, n_head=2, n_embd=16, seq_len=4, max_frames=48, end_frame="black",
                    tokenizer_train=cfg(2, 4), world_model_train=cfg(3, 2), reward_train=cfg(2, 32))
    path.write_text(json.dumps({"recipe": asdict(recipe)}, default=str))
    return path


def test_the_loop_records_trains_judges_and_retrains_on_the_agents_play(tmp_path):
    out = tmp_path / "loop"
    argv = ["--scenario", "take_cover", "--hud", "--out", str(out), "--iterations", "2", "--record", "strafe:3",
            "--collect", "1", "--max-steps", "10", "--workers", "1", "--recipe", str(tiny_recipe_card(tmp_path / "r.json")),
            "--wm-steps", "2", "--agent-steps", "16", "--no-progress", "--",
            "--observe", "latent", "--action-set", "take_cover", "--num-envs", "2", "--n-steps", "8",
            "--max-episode-steps", "10", "--eval-every", "0", "--eval-worlds", "real", "--final-episodes", "2",
            "--eval-envs", "2", "--features-dim", "16", "--threads", "1", "--no-progress"]
    rows = loop.main(argv)
    assert [r["iteration"] for r in rows] == [0, 1]
    first, second = rows
    assert first["recordings"] == ["strafe"] and second["recordings"] == ["strafe", "agent0-argmax", "agent0-sampled"]
    # the agent's own episodes are real frames the second world model learned from
    agent_frames = sum(json.loads((out / "data" / f / "manifest.json").read_text())["total_frames"]
                       for f in ("agent0-argmax", "agent0-sampled"))
    assert agent_frames > 0 and second["real_frames"] == first["real_frames"] + agent_frames
    assert json.loads((out / "data" / "agent0-argmax" / "manifest.json").read_text())["policy"] == "agent:agent-0:argmax"
    # the GPT continued from iteration 0 (3 steps) for --wm-steps more, on every recording so far
    assert (first["world_model_steps"], second["world_model_steps"]) == (3, 5)
    card = json.loads((out / "model-1" / "card.json").read_text())
    assert card["data"] == ["strafe", "agent0-argmax", "agent0-sampled"] and card["scenario"] == "take_cover"
    assert card["steps"]["tokenizer"] == 2  # trained once: the agent's latent view keeps its meaning
    # each agent trained only in its iteration's dream and was judged in the game
    for row, k in zip(rows, (0, 1)):
        cfg = json.loads((out / f"agent-{k}" / "config.json").read_text())
        assert cfg["world"] == "dream" and cfg["model"] == str(out / f"model-{k}")
        assert row["agent_steps"] == 16 and row["real"]["episodes"] == 2
    # a rerun resumes: finished iterations are not run again
    assert loop.main(argv) == rows
    with pytest.raises(SystemExit):
        loop.main(["--scenario", "take_cover", "--out", str(out), "--record", "no_such_policy:3"])
