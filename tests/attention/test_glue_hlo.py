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
    import json, sys
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
    print(json.dumps({"ops": hlo_glue.data_movement_outside_kernels(hlo), "glue": hlo_glue.glue_by_kind(hlo),
                      "kernels": hlo.count('custom_call_target="tpu_custom_call"')}))
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
    """strided(l)'s far part is a reshape (positions folded into heads), fixed(l, c)'s summary keys a
    strided slice of the [B, L / l, l, H * D] view (padded back in the backward): no data movement op."""
    compiled = _compile(pattern)
    assert compiled["ops"] == {"transpose": [], "gather": [], "scatter": []}
    assert compiled["kernels"] >= 7  # 2 forward, 2 dq, 2 dk/dv, the delta: the op is really there
    assert compiled["glue"]["gather"] == 0.0
