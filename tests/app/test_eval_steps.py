"""`eval --all-steps / --steps / --watch`: every checkpoint of a real tiny run evaluated once, one JSON per
step, the table and the curve; a restart redoes nothing that has its report; watching stops by itself."""

import json
import pathlib

import pytest
from tiny_run import train_tiny

from musenet_jax.app.eval_steps import EvalSettings, Watch, evaluate_steps
from musenet_jax.cli.main import main

STEPS = (3, 6, 9)


@pytest.fixture(scope="module")
def run_dir(music21_data_dir, tmp_path_factory):
    """A tiny run with checkpoints at steps 3, 6 and 9 (tiny_run saves every 3 steps)."""
    return train_tiny(music21_data_dir, tmp_path_factory.mktemp("evalsteps") / "run", steps=9)


def eval_args(run_dir, data_dir, *more):
    common = ["--data-dir", str(data_dir), "--split", "train", "--max-pieces", "2", "--num-samples", "0"]
    return ["eval", "--checkpoint", str(run_dir), *common, *more]


def mtimes(folder: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("step_*.json")}


@pytest.mark.slow
def test_all_steps_then_a_restarted_watch_evaluates_only_what_is_missing(run_dir, music21_data_dir, capsys):
    folder = run_dir / "eval"
    assert main(eval_args(run_dir, music21_data_dir, "--all-steps")) == 0
    out = capsys.readouterr().out
    assert sorted(mtimes(folder)) == [f"step_{s}.json" for s in sorted(STEPS, key=str)]
    reports = {s: json.loads((folder / f"step_{s}.json").read_text()) for s in STEPS}
    for step, report in reports.items():
        assert report["step"] == step and report["pieces"] == 2
        assert report["bits_per_note"] > 0 and report["bits_per_second"] > 0 and report["by_composer"]
    summary = (folder / "summary.md").read_text()
    assert [line.split("|")[1].strip() for line in summary.splitlines()[2:5]] == ["3", "6", "9"]
    assert summary.splitlines()[2] in out  # the table is printed too
    assert (folder / "bits_per_token.png").read_bytes()[:4] == b"\x89PNG"

    before = mtimes(folder)
    assert main(eval_args(run_dir, music21_data_dir, "--watch", "--until-step", "9")) == 0
    out = capsys.readouterr().out
    assert all(f"step {s}: done already" in out for s in STEPS)
    assert mtimes(folder) == before  # nothing evaluated again

    (folder / "step_6.json").unlink()  # as if the evaluation had been killed during step 6
    assert main(eval_args(run_dir, music21_data_dir, "--watch", "--until-step", "9")) == 0
    after = mtimes(folder)
    assert after["step_3.json"] == before["step_3.json"] and after["step_9.json"] == before["step_9.json"]
    assert json.loads((folder / "step_6.json").read_text())["bits_per_token"] == pytest.approx(
        reports[6]["bits_per_token"], rel=1e-6
    )


@pytest.mark.slow
def test_steps_list_other_settings_and_a_missing_step(run_dir, music21_data_dir, tmp_path, capsys):
    out_dir = tmp_path / "two"
    assert main(eval_args(run_dir, music21_data_dir, "--steps", "3,9", "--eval-dir", str(out_dir))) == 0
    assert sorted(mtimes(out_dir)) == ["step_3.json", "step_9.json"]
    capsys.readouterr()
    other = ["--steps", "3", "--eval-dir", str(out_dir), "--max-pieces", "1"]
    assert main(eval_args(run_dir, music21_data_dir, *other)) == 2
    err = capsys.readouterr().err
    assert "holds evaluations made with" in err and "another --eval-dir" in err and len(err.splitlines()) == 1
    assert main(eval_args(run_dir, music21_data_dir, "--steps", "4", "--eval-dir", str(tmp_path / "x"))) == 2
    assert "no checkpoint for step(s) 4" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "untrained"), "--all-steps"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


@pytest.mark.slow
def test_watch_stops_when_no_new_checkpoint_comes(run_dir, music21_data_dir, tmp_path):
    """A fake clock that the fake sleep advances: the watcher looks every 5 s and gives up after 12 s."""
    now = [0.0]
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        now[0] += seconds

    settings = EvalSettings(
        split="train", num_samples=0, max_pieces=1, overrides=(f"data.data_dir={music21_data_dir}",)
    )
    said = []
    result = evaluate_steps(
        run_dir,
        settings,
        steps=[3, 100],  # 100 never comes
        watch=Watch(poll_s=5, max_wait_s=12),
        folder=tmp_path / "watch",
        say=said.append,
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert result.evaluated == [3] and naps == [5, 5, 5]
    assert said[-1] == "no new checkpoint for 12 s; stopping"
