"""Without TPU or GPU device files, commands pick JAX's CPU backend up front instead of letting libtpu
(installed by the test extra) probe for a TPU and print a page of warnings."""

import os
import subprocess
import sys

import pytest

from musenet_jax.platform import default_to_cpu_without_accelerators, has_accelerator_device_files


def test_an_explicit_choice_is_kept():
    environ = {"JAX_PLATFORMS": "tpu"}
    default_to_cpu_without_accelerators(environ)
    assert environ == {"JAX_PLATFORMS": "tpu"}


@pytest.mark.skipif(
    has_accelerator_device_files(), reason="this machine has accelerator device files: JAX may use them"
)
def test_a_jax_command_on_a_cpu_machine_starts_quietly_on_the_cpu():
    environ = {}
    default_to_cpu_without_accelerators(environ)
    assert environ == {"JAX_PLATFORMS": "cpu"}
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    bench = [
        "bench",
        "attention",
        "--seq",
        "64",
        "--pattern",
        "strided",
        "--backends",
        "dense",
        "--batch",
        "1",
        "--heads",
        "1",
        "--head-dim",
        "16",
        "--stride",
        "16",
        "--block-size",
        "16",
        "--repeats",
        "1",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", *bench],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TPU" not in proc.stderr and "libtpu" not in proc.stderr, proc.stderr[-2000:]
