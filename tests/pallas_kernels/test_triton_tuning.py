"""The Triton kernels' num_warps / num_stages come from one table: lookups, the safe default for shapes it
lacks, the sweep's override, the pasteable lines a sweep prints, and the params reaching the lowered calls."""

import re

import jax
import jax.numpy as jnp

from musenet_jax.attention import patterns as P
from musenet_jax.attention.backends import attend
from pallas_kernels import triton_tuning as T
from pallas_kernels.flash_gpu import BACKWARD_TILE


def test_the_table_covers_the_models_tiles_and_fits_shared_memory():
    """The musenet_72l shape (128-wide layout blocks, head_dim 64, bf16) has an entry for each kernel, with
    the backward's own tiles; every entry's pipelined tiles fit an H100's 227 KiB of shared memory."""
    tiles = {"fwd": (128, 128), "dq": (BACKWARD_TILE, 128), "dkv": (128, BACKWARD_TILE)}
    for kind, (bq, bk) in tiles.items():
        assert T.TuneKey(kind, bq, bk, 64, "bfloat16") in T.TABLE
    for key, params in T.TABLE.items():
        assert (key.block_q, key.block_k) == tiles[key.kind]
        assert params.num_stages * T.streamed_bytes(key) <= 227 * 1024, key
        assert params.num_warps in (4, 8) and params.num_stages >= 1


def test_a_shape_not_in_the_table_gets_a_safe_default():
    small = T.TuneKey("fwd", 64, 64, 16, "float32")
    wide = T.TuneKey("dkv", 256, 64, 256, "float32")  # one stage alone streams 512 KiB: still 1 stage
    assert small not in T.TABLE and wide not in T.TABLE
    assert T.lookup(small) == T.default_params(small) == T.TritonParams(4, 2)
    assert T.lookup(wide) == T.TritonParams(8, 1)
    for kind in T.KERNEL_KINDS:
        for dim in (16, 32, 64, 128):
            key = T.TuneKey(kind, 128, 64, dim, "bfloat16")
            params = T.default_params(key)
            assert params.num_stages == 1 or params.num_stages * T.streamed_bytes(key) <= T.SAFE_SHARED_MEMORY


def test_an_override_wins_inside_and_is_gone_after():
    key = T.TuneKey("fwd", 128, 128, 64, "bfloat16")
    before = T.lookup(key)
    with T.overriding({key: T.TritonParams(8, 1)}):
        assert T.lookup(key) == T.TritonParams(8, 1)
    assert T.lookup(key) == before == T.TABLE[key]


def test_printed_table_lines_are_the_tables_source():
    lines = T.table_lines(T.TABLE)
    assert len(lines) == len(T.TABLE) and lines[0].lstrip().startswith("TuneKey('fwd'")
    rebuilt = eval("{" + "\n".join(lines) + "}", vars(T))  # what a sweep prints pastes back as the table
    assert rebuilt == T.TABLE


def _triton_params(text: str) -> list[tuple[str, int, int]]:
    """(kernel name, num_warps, num_stages) of each Triton call in lowered StableHLO."""
    calls = [line for line in text.splitlines() if "xla.gpu.triton" in line]
    found = [re.search(r'name = "(\w+)", num_stages = (\d+) : i32, num_warps = (\d+)', c) for c in calls]
    return [(m[1], int(m[3]), int(m[2])) for m in found]


def test_lowered_triton_calls_carry_the_looked_up_params():
    x = jax.ShapeDtypeStruct((1, 256, 2, 64), jnp.bfloat16)

    def lowered_params():
        def grads(q, k, v):  # a new function each time: jit would reuse an earlier trace of the same one
            def loss(q, k, v):
                out = attend(q, k, v, (P.strided(16),), backend="pallas", block_size=128)
                return out.astype(jnp.float32).sum()

            return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

        lowered = jax.jit(grads).trace(x, x, x).lower(lowering_platforms=("cuda",))
        return {name: (w, s) for name, w, s in _triton_params(lowered.as_text())}

    table = {
        kind: T.TABLE[T.TuneKey(kind, *tile, 64, "bfloat16")]
        for kind, tile in {"fwd": (128, 128), "dq": (64, 128), "dkv": (128, 64)}.items()
    }
    assert lowered_params() == {f"sparse_flash_{kind}": tuple(p) for kind, p in table.items()}
    with T.overriding({T.TuneKey("dq", 64, 128, 64, "bfloat16"): T.TritonParams(8, 4)}):
        assert lowered_params()["sparse_flash_dq"] == (8, 4)
