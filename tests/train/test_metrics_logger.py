"""The metrics logger: every record carries the run's wall-clock time, continued across a resume."""

from __future__ import annotations

import json

from musenet_jax.train.metrics import MetricsLogger, read_metrics


def test_elapsed_seconds_grow_and_continue_after_resume(tmp_path):
    first = MetricsLogger(tmp_path, start_step=0, total_steps=4, enabled=True, progress=False)
    first.log(1, {"loss": 2.0})
    first.log(2, {"loss": 1.5})
    first.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert 0 <= records[0]["elapsed_s"] <= records[1]["elapsed_s"]

    # Say the first session ran for ten minutes: a session resuming at step 2 continues from there.
    earlier = [r | {"elapsed_s": 600.0 + r["step"]} for r in records]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in earlier))
    resumed = MetricsLogger(tmp_path, start_step=2, total_steps=4, enabled=True, progress=False)
    resumed.log(3, {"loss": 1.2})
    resumed.close()
    after = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in after] == [1, 2, 3]
    assert after[-1]["elapsed_s"] >= 602.0
