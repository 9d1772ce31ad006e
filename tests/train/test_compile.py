"""`musenet-jax compile`: a real ahead-of-time compile of the tiny train step through libtpu for a
v5p slice (no TPU here), and one-line errors for bad topologies and meshes."""

import json

import pytest

from musenet_jax.cli.main import main
from musenet_jax.config import load_config
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.info import count_parameters, flops_per_token

ARGS = ["compile", "--config", "tiny", "--set", "model.context=64"]


@pytest.mark.slow
def test_tiny_train_step_compiles_for_v5p_with_sane_memory_and_flops(capsys):
    assert (
        main([*ARGS, "--topology", "v5p:2x2x1", "--mesh", "data=1,fsdp=2,tensor=2", "--batch", "8", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert {
        "config",
        "topology",
        "num_devices",
        "mesh",
        "global_batch",
        "per_device_total_bytes",
        "hbm_bytes",
        "flops_per_step",
    } <= report.keys()
    assert report["num_devices"] == 4 and report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    assert report["global_batch"] == 8 and report["hbm_bytes"] == 95 * 2**30 and report["fits"]

    cfg = load_config("tiny", ["model.context=64"])
    vocab = Vocabulary(cfg.encoding)
    state_bytes = 3 * 4 * count_parameters(cfg.model, vocab)  # fp32 params + two Adam moments
    # The train state is split over the 4 devices (some small arrays replicated), and donated.
    assert state_bytes / 4 <= report["argument_bytes"] <= state_bytes / 2
    assert state_bytes / 4 <= report["alias_bytes"] <= report["argument_bytes"]
    assert report["argument_bytes"] < report["per_device_total_bytes"] < 2**30

    analytic = flops_per_token(cfg.model, vocab.size) * 8 * 64
    assert report["flops_per_step"] == pytest.approx(analytic)
    # One layer group and no accumulation: XLA counts everything here; remat adds up to a forward pass.
    per_device = analytic / 4
    assert per_device <= report["xla_flops_per_device"] <= 1.6 * per_device


@pytest.mark.parametrize(
    "topology, message",
    [
        ("tpu9:2x2", "unknown TPU generation 'tpu9'; valid: "),
        ("v5p:3x3x3", "topology 'v5p:3x3x3': "),
        ("v5p-8", "unknown TPU generation 'v5p-8'"),
    ],
)
def test_bad_topology_is_one_line(capsys, topology, message):
    assert main([*ARGS, "--topology", topology]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "mesh, message",
    [
        ("data=2,pipe=2", "unknown mesh axis 'pipe'"),
        ("fsdp=x", "expected fsdp=INTEGER"),
        ("data=3,fsdp=1,tensor=1", "needs 3 devices, have 4"),
    ],
)
def test_bad_mesh_is_one_line(capsys, mesh, message):
    assert main([*ARGS, "--topology", "v5p:2x2x1", "--mesh", mesh]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_batch_that_does_not_split_over_the_mesh_is_refused(capsys):
    assert main([*ARGS, "--topology", "v5p:2x2x1", "--mesh", "data=1,fsdp=4,tensor=1", "--batch", "6"]) == 2
    assert "train.global_batch=6 must split" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_train_step_compiles_for_v5p_with_the_pallas_kernels(capsys):
    """The Mosaic kernels (forward and backward) inside the sharded, scanned train step, through libtpu."""
    args = [
        *ARGS,
        "--set",
        "model.attention=pallas",
        "--topology",
        "v5p:2x2x1",
        "--mesh",
        "data=1,fsdp=2,tensor=2",
        "--batch",
        "8",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["attention"] == "pallas" and report["fits"] and report["num_devices"] == 4
    assert report["xla_flops_per_device"] > 0
