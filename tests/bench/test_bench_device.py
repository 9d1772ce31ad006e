"""`musenet-jax bench device`: the GPU check's plan, each part's status in one JSON, a failing part recorded
while the rest go on, and the whole check dry-run on the CPU through launch/device_check.sh."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from cli_runs import one_error_line, run_cli

from musenet_jax.bench import device

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_parts_budgets_fit_eight_minutes_and_both_plans_cover_every_part():
    assert sum(part.budget_s for part in device.PARTS) <= device.TOTAL_BUDGET_S == 8 * 60
    assert device.TUNE_PART.budget_s <= device.TOTAL_BUDGET_S
    train_parts = {p.name for p in device.PARTS} - {"kernel_tests", "attention"}
    for plan in (device.GPU_PLAN, device.DRY_RUN_PLAN):
        assert set(plan.train) == train_parts
        assert set(plan.attention_backends) == {
            "dense",
            "xla_blocksparse",
            "pallas",
            "jax_flash",
            "jax_cudnn",
        }
    assert device.GPU_PLAN.attention_seqs == (4096, 16384)
    assert device.GPU_PLAN.train["train_small"][0] == "small"
    assert device.GPU_PLAN.train["train_musenet_72l_2layers"] == (
        "musenet_72l",
        ("model.n_layers=2", "train.global_batch=8"),
    )


def test_a_part_that_fails_or_overruns_is_recorded_with_its_error():
    env = dict(os.environ)
    crash = [sys.executable, "-c", "import sys; print('the kernel broke', file=sys.stderr); sys.exit(3)"]
    failed = device.run_process(crash, env=env, budget_s=60)
    assert failed["status"] == "failed" and failed["returncode"] == 3
    assert failed["error"] == "the kernel broke"
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]
    overran = device.run_process(slow, env=env, budget_s=1)
    assert overran["status"] == "timeout" and "budget of 1 s" in overran["error"]
    assert device.run_process([sys.executable, "-c", "pass"], env=env, budget_s=60)["status"] == "ok"


def test_every_part_runs_when_one_before_it_fails():
    """Two real part processes that fail (names no plan has): both are run and recorded."""
    parts = tuple(device.Part(name, 60, "no such part") for name in ("first_missing", "second_missing"))
    lines = []
    results = device.device_check(parts, dry_run=True, jax_platforms="cpu", progress=lines.append)
    assert list(results) == ["first_missing", "second_missing"]
    for name, result in results.items():
        assert result["status"] == "failed" and f"unknown part {name!r}" in result["error"]
    assert sum("-> failed" in line for line in lines) == 2


def test_tune_gpu_without_a_gpu_says_so_in_one_line(capsys, tmp_path):
    out = tmp_path / "tune.json"
    rc, _, err = run_cli(capsys, ["bench", "device", "--tune-gpu", "--out", str(out)])
    assert rc == 2 and "needs a GPU" in one_error_line(err, "bench")
    assert not out.exists()


def test_out_is_never_a_file_the_command_did_not_write(capsys, tmp_path):
    theirs = tmp_path / "notes.json"
    theirs.write_text('{"mine": true}')
    rc, _, err = run_cli(capsys, ["bench", "device", "--out", str(theirs)])
    assert rc == 2 and "is not a report of this command" in one_error_line(err, "bench")
    assert theirs.read_text() == '{"mine": true}'
    ours = tmp_path / "device_check.json"
    ours.write_text(json.dumps({"report": device.REPORT}))
    rc, _, err = run_cli(capsys, ["bench", "device", "--tune-gpu", "--out", str(ours)])
    assert rc == 2 and "needs a GPU" in err  # an earlier report is no obstacle: it got past --out's check


def test_the_cudnn_baseline_off_a_gpu_is_refused_in_one_line(capsys):
    argv = ["bench", "attention", "--seq", "256", "--backends", "dense,jax_cudnn"]
    rc, _, err = run_cli(capsys, argv)
    assert rc == 2 and "runs on an NVIDIA GPU only" in one_error_line(err, "bench")


def _launch(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as on a user's machine
    return subprocess.run(
        ["bash", str(ROOT / "launch" / "device_check.sh"), *args],
        env=env | {"PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_dry_run_writes_one_json_with_every_parts_status_and_figures(tmp_path):
    done = _launch(tmp_path, "--out", "check.json")  # relative to where it is started
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.startswith("no GPU here (cpu): running the dry-run plan")
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["report"] == device.REPORT and report["dry_run"] is True
    assert report["platform"] == "cpu" and report["device"] and report["jax_version"]
    parts = report["parts"]
    assert list(parts) == [p.name for p in device.PARTS]
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("stderr_tail"))
        assert part["budget_s"] > 0 and part["seconds"] <= part["budget_s"]
    assert parts["kernel_tests"]["passed"] >= 1 and parts["kernel_tests"]["failed"] == 0
    rows = {r["backend"]: r for r in parts["attention"]["rows"]}
    assert set(rows) == set(device.BACKENDS)
    for row in rows.values():
        assert ("fwd_bwd_ms" in row) != ("error" in row), row
    assert "cuDNN" in rows["jax_cudnn"]["error"]  # no GPU: recorded, not fatal
    assert rows["pallas"]["speedup_fwd_bwd_vs_dense"] == pytest.approx(
        rows["dense"]["fwd_bwd_ms"] / rows["pallas"]["fwd_bwd_ms"]
    )
    for name in ("train_small", "train_musenet_72l_2layers"):
        result = parts[name]["result"]
        assert result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1
    assert parts["train_musenet_72l_2layers"]["result"]["attention"] == "pallas"


@pytest.mark.slow
def test_tune_gpu_dry_run_prints_table_lines_and_keeps_every_timing(tmp_path):
    done = _launch(tmp_path, "--tune-gpu", "--dry-run", "--out", "tune.json")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("TuneKey(")]
    assert [line.split(",")[0] for line in lines] == ["TuneKey('fwd'", "TuneKey('dq'", "TuneKey('dkv'"]
    rows = json.loads((tmp_path / "tune.json").read_text())["parts"]["gpu_tune"]["rows"]
    assert len(rows) == 3 * len(device.DRY_RUN_PLAN.tune.candidates) and all(r["ms"] > 0 for r in rows)


@pytest.mark.slow
def test_the_gpu_plans_programs_lower_for_cuda():
    """What the check runs on a GPU lowers for CUDA from this CPU host: the Pallas backend's forward +
    backward at the plan's first n for each pattern, and both train steps (the 72-layer config cut to 2
    layers calls the Triton kernels: forward, dq and dk/dv per component and layer)."""
    import argparse

    import jax
    import jax.numpy as jnp

    from musenet_jax.attention.patterns import by_name
    from musenet_jax.bench import attention
    from musenet_jax.bench.train import synthetic_batch
    from musenet_jax.config import load_config
    from musenet_jax.model.sharding import make_mesh
    from musenet_jax.train.setup import make_train_setup
    from musenet_jax.train.step import jit_train_step

    plan = device.GPU_PLAN
    parser = argparse.ArgumentParser()
    attention.add_arguments(parser)
    args = parser.parse_args(list(plan.attention_args))
    x = jax.ShapeDtypeStruct((args.batch, plan.attention_seqs[0], args.heads, args.head_dim), jnp.bfloat16)
    for name in plan.attention_patterns:
        pattern = by_name(name, stride=args.stride, summary=args.summary)
        _, forward_backward = attention._programs(args, pattern, "pallas", on_tpu=False)
        text = jax.jit(forward_backward).trace(x, x, x, x).lower(lowering_platforms=("cuda",)).as_text()
        assert text.count("xla.gpu.triton") == 6  # two components x (forward, dq, dk/dv)
    calls = {}
    for part, (config, overrides) in plan.train.items():
        cfg = load_config(config, list(overrides))
        setup = make_train_setup(cfg, make_mesh(cfg.mesh))
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in synthetic_batch(cfg, 8).items()}
        with jax.set_mesh(setup.mesh):
            lowered = jit_train_step(setup).trace(setup.abstract_state(), batch)
            calls[part] = lowered.lower(lowering_platforms=("cuda",)).as_text().count("xla.gpu.triton")
    assert calls == {"train_small": 0, "train_musenet_72l_2layers": 2 * 2 * 3}
