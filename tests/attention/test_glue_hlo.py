"""The pallas backend's forward + backward compiled for TPU (ahead of time for v5p, no TPU needed): no
transpose, gather or scatter outside the kernels for strided(l) and fixed(l, c) at a length that is a
multiple of l, and the glue named by kind (musenet_jax/bench/hlo_glue.py). The byte counts are the
benchmark's business."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMPILE = textwrap.dedent(
    """
    import json, re, sys
    import jax, jax.numpy as jnp
    from musenet_jax.attention import patterns as P
    from musenet_jax.attention.backends import attend
    from musenet_jax.bench import hlo_glue
    from musenet_jax.train.compile import topology_devices

    device = topology_devices("v5p:2x2x1")[0]
    n, heads, dim = 1024, 4, 64
    flat = jax.ShapeDtypeStruct((1, n, heads * dim), jnp.bfloat16,
                                sharding=jax.sharding.SingleDeviceSharding(device))
    pattern = P.strided(32) if sys.argv[1] == "strided" else P.fixed(128, 32)

    def loss(q, k, v):  # [B, L, H * D] in, as a projection writes them
        q, k, v = (x.reshape(1, n, heads, dim) for x in (q, k, v))
        out = attend(q, k, v, (pattern,), backend="pallas", block_size=128)
        return out.astype(jnp.float32).sum()

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(flat, flat, flat).compile().as_text()
    kernels = re.findall(r"%([A-Za-z_]+?)(?:[.][0-9]+)? = .*custom_call_target=.tpu_custom_call", hlo)
    slices = re.findall(r" (slice|pad|dynamic-slice|dynamic-update-slice)[(]", hlo)
    print(json.dumps({"ops": hlo_glue.data_movement_outside_kernels(hlo), "glue": hlo_glue.glue_by_kind(hlo),
                      "kernels": sorted(kernels), "slices": slices}))
    """
)


def _compile(pattern: str) -> dict:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, pattern],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["strided", "fixed"])
def test_forward_backward_has_no_transpose_gather_or_scatter_outside_the_kernels(pattern):
    """strided(l)'s far part runs on the [B, L / l, l, H * D] view (strided_far_tpu: no fold), fixed(l,
    c)'s summary keys are read in place from that view and their dk / dv added in place (flash_tpu
    kv_tail): no data movement op, for strided no relayout of q, k, v or their gradients (only the far
    part's float32 row statistics change order: 3 x [4, 1024] float32 to and from [4, 32, 32], whose 32 lanes
    are stored in 128, 0.25 MB read and written), and for fixed no slice of k / v or pad of dk / dv."""
    compiled = _compile(pattern)
    assert compiled["ops"] == {"transpose": [], "gather": [], "scatter": []}
    assert compiled["glue"]["gather"] == 0.0
    band = ["sparse_flash_dkv", "sparse_flash_dq", "sparse_flash_fwd"]
    if pattern == "strided":
        assert compiled["kernels"] == sorted(
            band + ["sparse_flash_delta", "strided_far_bwd", "strided_far_fwd"]
        )
        assert compiled["glue"]["relayout"] < 0.5e-3  # GB; one copy of q alone reads and writes 1.0e-3
    else:  # the op is really there: both components' forward, dq and dk/dv, and the delta
        assert compiled["kernels"] == sorted(band * 2 + ["sparse_flash_delta"])
        # the summary keys are read in place: no slice of k / v, no pad of dk / dv
        assert compiled["slices"] == []
