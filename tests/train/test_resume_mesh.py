"""A run resumes on another slice and another attention backend: what the parameters mean is kept,
how they are computed may change. A change of architecture is still refused in one line."""

from __future__ import annotations

import jax
import pytest

from musenet_jax.config import load_config
from musenet_jax.errors import UserError
from musenet_jax.train import loop
from musenet_jax.train.metrics import read_metrics

RUN = [
    "model.d_model=32",
    "model.context=64",
    "model.attention=xla_blocksparse",
    "train.global_batch=8",
    "train.steps=8",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.checkpoint_every=4",
    "train.eval_every=1000",
]


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_resume_from_four_devices_on_two_with_another_backend_continues_the_run(music21_data_dir, tmp_path):
    four = load_config("tiny", [*RUN, "mesh.data=1", "mesh.fsdp=4"]).with_data_dir(music21_data_dir)
    loop.train(four, tmp_path / "straight", devices=jax.devices()[:4])

    loop.train(four, tmp_path / "moved", steps=4, devices=jax.devices()[:4])
    said: list[str] = []
    two = load_config("tiny", [*RUN, "mesh.data=1", "mesh.fsdp=2", "model.attention=dense"])
    summary = loop.train(
        two.with_data_dir(music21_data_dir), tmp_path / "moved", devices=jax.devices()[:2], say=said.append
    )
    assert summary.start_step == 4 and summary.final_step == 8
    assert said == ["resuming with model.attention 'xla_blocksparse' -> 'dense', mesh.fsdp 4 -> 2"]

    straight, moved = _losses(tmp_path / "straight"), _losses(tmp_path / "moved")
    assert sorted(moved) == list(range(1, 9))
    for step in range(5, 9):  # the resumed steps, on 2 devices with dense attention
        assert moved[step] == pytest.approx(straight[step], rel=1e-4), (step, moved[step], straight[step])

    wider = load_config("tiny", [*RUN, "model.d_model=64", "mesh.fsdp=2", "train.steps=9"])
    with pytest.raises(UserError) as refused:
        loop.train(wider.with_data_dir(music21_data_dir), tmp_path / "moved", devices=jax.devices()[:2])
    message = str(refused.value)
    assert "different model.d_model" in message and "\n" not in message
