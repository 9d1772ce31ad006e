"""model/embeddings.py: the timing, piece-position and countdown bucket functions, and MusicEmbedding.

The buckets are what tells the model where in musical time it is; each promise of the module docstring
(clipping, equal parts, log-spaced countdown reaching 0 at the end) is checked on hand-made times."""

import jax.numpy as jnp
import numpy as np
from flax import nnx
from model_inputs import VOCAB, batch, tiny_model_config

from musenet_jax.model.embeddings import MusicEmbedding, countdown_buckets, piece_parts, time_buckets

STEP_MS = 10


def test_time_buckets_scale_and_clip():
    cfg = tiny_model_config(time_bucket_ms=120, time_buckets=8)
    times = jnp.array([[0, 11, 12, 24, 10_000]])  # steps of 10 ms
    assert time_buckets(times, cfg, STEP_MS).tolist() == [[0, 0, 1, 2, 7]]


def test_piece_parts_equal_parts_and_last_part_clipped():
    cfg = tiny_model_config(structure_parts=4)
    times = jnp.array([[0, 24, 25, 50, 99, 100, 150]])
    assert piece_parts(times, jnp.array([100]), cfg).tolist() == [[0, 0, 1, 2, 3, 3, 3]]
    # A zero duration counts as one step: no division by zero.
    assert piece_parts(jnp.array([[0, 5]]), jnp.array([0]), cfg).tolist() == [[0, 3]]


def test_countdown_is_zero_at_the_end_and_grows_with_time_left():
    cfg = tiny_model_config(time_bucket_ms=100, time_buckets=1000, countdown_buckets=16)
    times = jnp.arange(0, 10_001, 50)[None, :]
    buckets = np.asarray(countdown_buckets(times, jnp.array([10_000]), cfg, STEP_MS))[0]
    assert buckets[-1] == 0
    assert np.all(np.diff(buckets) <= 0)  # less time left -> never a larger bucket
    assert buckets.min() >= 0 and buckets.max() <= cfg.countdown_buckets - 1
    # Log spacing: the last second spans more buckets than a second an hour-fraction earlier.
    assert buckets[-21] - buckets[-1] > buckets[0] - buckets[20]
    # Past the end (times > durations) counts as nothing left, not negative.
    assert countdown_buckets(jnp.array([[20_000]]), jnp.array([10_000]), cfg, STEP_MS).tolist() == [[0]]


def test_music_embedding_is_the_sum_of_its_tables():
    cfg = tiny_model_config()
    emb = MusicEmbedding(cfg, VOCAB, STEP_MS, rngs=nnx.Rngs(0))
    b = batch(batch_size=2, length=16)
    positions = jnp.broadcast_to(jnp.arange(16), (2, 16))
    out = emb(b["inputs"][:, :16], positions, b["times"][:, :16], b["durations"])
    assert out.shape == (2, 16, cfg.d_model) and out.dtype == jnp.float32
    t, d = b["times"][:, :16], b["durations"]
    expected = (
        emb.token.embedding[...][b["inputs"][:, :16]]
        + emb.position.embedding[...][positions]
        + emb.timing.embedding[...][time_buckets(t, cfg, STEP_MS)]
        + emb.part.embedding[...][piece_parts(t, d, cfg)]
        + emb.countdown.embedding[...][countdown_buckets(t, d, cfg, STEP_MS)]
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_tables_have_the_configured_rows():
    cfg = tiny_model_config(time_buckets=50, structure_parts=7, countdown_buckets=9)
    emb = MusicEmbedding(cfg, VOCAB, STEP_MS, rngs=nnx.Rngs(0))
    rows = {
        name: getattr(emb, name).embedding.shape[0]
        for name in ("token", "position", "timing", "part", "countdown")
    }
    assert rows == {"token": VOCAB, "position": cfg.context, "timing": 50, "part": 7, "countdown": 9}
