"""Orbax run checkpoints: items saved together, keep-N plus best, resharding, and crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from musenet_jax.errors import UserError
from musenet_jax.train.checkpoint import CheckpointMeta, RunCheckpoints, check_fingerprint


def _iterator() -> grain.DatasetIterator:
    return iter(grain.MapDataset.range(64).shuffle(seed=3).batch(4).to_iter_dataset())


def _meta(step: int) -> CheckpointMeta:
    return CheckpointMeta(step=step, vocab_fingerprint="f" * 64, vocab_size=7, config={"name": "tiny"})


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def test_save_restore_roundtrip_with_data_position_and_resharding(tmp_path):
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    sharded = NamedSharding(mesh, PartitionSpec("data", "tensor"))
    params = {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), sharded), "b": jnp.ones((3,))}
    train_state = {"step": jnp.int32(5), "rng": jax.random.key(11), "mu": jnp.full((8, 4), 0.5)}
    data = _iterator()
    next(data)
    checkpoints = RunCheckpoints(tmp_path, keep=2)
    assert checkpoints.save(5, params=params, train_state=train_state, data_iterator=data, meta=_meta(5))
    checkpoints.wait()
    expected_next = next(data)

    # Restore onto another layout: everything replicated on one device, a fresh iterator.
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract_params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), params
    )
    fresh = _iterator()
    restored = RunCheckpoints(tmp_path, read_only=True).restore(
        5, abstract_params=abstract_params, abstract_train_state=_abstract(train_state), data_iterator=fresh
    )
    np.testing.assert_array_equal(restored["params"]["w"], np.arange(32.0).reshape(8, 4))
    assert restored["params"]["w"].sharding == one_device
    assert int(restored["train_state"]["step"]) == 5
    np.testing.assert_array_equal(
        jax.random.key_data(restored["train_state"]["rng"]), jax.random.key_data(train_state["rng"])
    )
    np.testing.assert_array_equal(next(fresh), expected_next)
    assert checkpoints.read_meta(5) == _meta(5)


def test_keeps_latest_n_plus_the_best_validated(tmp_path):
    checkpoints = RunCheckpoints(tmp_path, keep=2)
    data = _iterator()
    bits = {10: 3.0, 20: 2.0, 30: None, 40: 2.5, 50: None}
    for step, value in bits.items():
        metrics = None if value is None else {"val_bits_per_token": value}
        checkpoints.save(
            step,
            params={"w": jnp.full((2,), float(step))},
            train_state={"step": jnp.int32(step)},
            data_iterator=data,
            meta=_meta(step),
            metrics=metrics,
        )
    checkpoints.wait()
    assert checkpoints.all_steps() == [20, 40, 50]
    assert checkpoints.latest_step() == 50
    assert checkpoints.best_step() == 20


def test_vocab_fingerprint_mismatch_is_a_user_error():
    check_fingerprint(_meta(3), "f" * 64, "w/checkpoints")
    with pytest.raises(UserError, match="different vocabulary"):
        check_fingerprint(_meta(3), "0" * 64, "w/checkpoints")


KILLED_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import grain, jax.numpy as jnp
    from musenet_jax.train.checkpoint import CheckpointMeta, RunCheckpoints

    data = iter(grain.MapDataset.range(64).batch(4).to_iter_dataset())
    meta = lambda step: CheckpointMeta(step=step, vocab_fingerprint="f" * 64, vocab_size=7, config={})
    checkpoints = RunCheckpoints(sys.argv[1], keep=3)
    big = jnp.ones((2048, 2048))
    checkpoints.save(
        1, params={"w": big}, train_state={"step": jnp.int32(1)}, data_iterator=data, meta=meta(1)
    )
    checkpoints.wait()
    next(data)
    # The arrays of step 2 are being written by Orbax's background threads when the process dies.
    checkpoints.save(
        2, params={"w": big * 2}, train_state={"step": jnp.int32(2)}, data_iterator=data, meta=meta(2)
    )
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.slow
def test_crash_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_DURING_SAVE, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = os.listdir(tmp_path / "checkpoints")
    assert "1" in leftovers and "2" not in leftovers
    assert any(name.startswith("2.") for name in leftovers), leftovers  # the interrupted, unfinished save

    checkpoints = RunCheckpoints(tmp_path, keep=3)
    assert checkpoints.latest_step() == 1
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    data = iter(grain.MapDataset.range(64).batch(4).to_iter_dataset())
    restored = checkpoints.restore(
        1,
        abstract_params={"w": jax.ShapeDtypeStruct((2048, 2048), jnp.float32, sharding=device)},
        abstract_train_state={"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=device)},
        data_iterator=data,
    )
    assert float(restored["params"]["w"].sum()) == 2048.0 * 2048.0
    assert int(restored["train_state"]["step"]) == 1
    np.testing.assert_array_equal(next(data), [0, 1, 2, 3])

    # Training goes on: step 2 is saved again over the debris of the interrupted one.
    checkpoints.save(
        2,
        params={"w": jnp.zeros((2, 2))},
        train_state={"step": jnp.int32(2)},
        data_iterator=data,
        meta=_meta(2),
    )
    checkpoints.wait()
    assert checkpoints.all_steps() == [1, 2]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_any_iterator_with_get_state_and_set_state_is_checkpointed(tmp_path):
    """grain's DataLoader iterator keeps its state as bytes; the handler takes bytes and JSON alike."""
    loader = grain.DataLoader(
        data_source=grain.sources.RangeDataSource(0, 40, 1),
        sampler=grain.samplers.IndexSampler(40, shuffle=True, seed=5, num_epochs=1),
        operations=[grain.transforms.Batch(4)],
        worker_count=0,
    )
    data = iter(loader)
    next(data)
    checkpoints = RunCheckpoints(tmp_path)
    checkpoints.save(
        1, params={"w": jnp.ones(2)}, train_state={"step": jnp.int32(1)}, data_iterator=data, meta=_meta(1)
    )
    checkpoints.wait()
    expected = next(data)
    fresh = iter(loader)
    checkpoints.restore(1, abstract_params=_abstract({"w": jnp.ones(2)}), data_iterator=fresh)
    np.testing.assert_array_equal(next(fresh), expected)


def test_opening_a_run_read_only_says_nothing(tmp_path, caplog):
    """Sampling and eval open checkpoints read-only on purpose; Orbax's warnings about it are not news."""
    import logging

    RunCheckpoints(tmp_path / "run", keep=1).wait()
    absl_logger = logging.getLogger("absl")
    for installed in list(absl_logger.filters):  # as in a fresh process that only samples
        absl_logger.removeFilter(installed)
    with caplog.at_level(logging.WARNING):
        RunCheckpoints(tmp_path / "run", read_only=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
