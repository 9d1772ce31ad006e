"""`load_run` reads a run's parameters only, and `generate` composes without building an optimizer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from musenet_jax.app.run import load_run
from musenet_jax.errors import UserError
from musenet_jax.model.sharding import make_mesh
from musenet_jax.train.checkpoint import RunCheckpoints
from musenet_jax.train.loop import split_for_checkpoint
from musenet_jax.train.setup import make_train_setup


@pytest.mark.slow
def test_load_run_gives_the_checkpoints_parameters(tiny_run):
    run = load_run(tiny_run)
    assert run.step == 3 and run.cfg.model.d_model == 32
    setup = make_train_setup(run.cfg, make_mesh(run.cfg.mesh, jax.devices()[:1]))
    params, rest = split_for_checkpoint(setup.abstract_state())
    checkpoints = RunCheckpoints(tiny_run, read_only=True)
    try:
        saved = checkpoints.restore(3, abstract_params=params)["params"]
    finally:
        checkpoints.close()
    loaded = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(saved), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_load_run_applies_overrides_of_the_usage_sections_only(tiny_run):
    run = load_run(tiny_run, overrides=["sample.temperature=0.5", "critic.steps=7"])
    assert run.cfg.sample.temperature == 0.5 and run.cfg.critic.steps == 7
    with pytest.raises(
        UserError, match=r"--set model.d_model=64: only data.\*, sample.\*, critic.\* can change"
    ):
        load_run(tiny_run, overrides=["model.d_model=64"])
    with pytest.raises(UserError, match="no checkpoint for step 99 .* saved steps: 3"):
        load_run(tiny_run, 99)


@pytest.mark.slow
def test_generate_builds_no_optimizer_or_train_state(tiny_run, tmp_path):
    """In a fresh interpreter: load a run and generate; the optimizer and train-state modules never load."""
    script = textwrap.dedent(f"""
        import json, sys
        from musenet_jax.app.generate import generate
        from musenet_jax.app.run import load_run
        run = load_run({str(tiny_run)!r}, overrides=["sample.num_samples=1", "sample.max_new_tokens=8"])
        ranking = generate(run, {str(tmp_path / "out")!r}, composer="bach", instruments="piano",
                           show_progress=False, say=lambda line: None)
        loaded = sorted(m for m in sys.modules if m.startswith(("musenet_jax.train", "optax")))
        print(json.dumps({{"candidates": len(ranking), "loaded": loaded}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={"JAX_PLATFORMS": "cpu", **__import__("os").environ},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["candidates"] == 1 and (tmp_path / "out" / "sample_0.mid").is_file()
    assert "musenet_jax.train.optimizer" not in result["loaded"]
    assert (
        "musenet_jax.train.setup" not in result["loaded"] and "musenet_jax.train.step" not in result["loaded"]
    )
