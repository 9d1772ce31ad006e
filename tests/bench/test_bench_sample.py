"""`musenet-jax bench sample`: KV-cache decoding timed side by side with full forwards."""

import json

from musenet_jax.cli.main import main


def test_bench_sample_reports_both_times_and_their_ratio(capsys):
    args = [
        "bench",
        "sample",
        "--config",
        "tiny",
        "--context",
        "64",
        "--steps",
        "4",
        "--rounds",
        "1",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["context"] == 64 and report["config"] == "tiny"
    assert report["full_forward_ms_per_token"] > 0 and report["kv_cache_ms_per_token"] > 0
    assert report["speedup"] == report["full_forward_ms_per_token"] / report["kv_cache_ms_per_token"]


def test_bench_sample_refuses_more_steps_than_context(capsys):
    assert main(["bench", "sample", "--config", "tiny", "--context", "8", "--steps", "8"]) == 2
    assert "--steps < --context" in capsys.readouterr().err
