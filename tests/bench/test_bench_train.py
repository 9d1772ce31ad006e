"""`musenet-jax bench train`: the tiny config's step timed next to a measured matmul peak."""

import json

from musenet_jax.cli.main import main


def test_bench_train_reports_tokens_per_second_and_mfu(capsys):
    args = [
        "bench",
        "train",
        "--config",
        "tiny",
        "--set",
        "model.context=64",
        "--batch",
        "8",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens_per_s"] == report["global_batch"] * report["context"] / (report["step_ms"] / 1e3)
    assert report["peak_source"] == "measured fp32 matmul" and report["peak_flops"] > 0
    assert 0 < report["mfu"] < 1 and report["mfu"] == report["achieved_flops"] / report["peak_flops"]


def test_bench_train_refuses_zero_steps(capsys):
    assert main(["bench", "train", "--config", "tiny", "--steps", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
