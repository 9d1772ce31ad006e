"""Faults of issue 29 met through the command line, each answered by one line and an exit status (never a
traceback), with real parts: the real CLI (in process, or as a subprocess where a signal, an environment
read at import or JAX's start-up is the point), real Orbax checkpoints, real TFDS datasets, a real socket
for ports, a closed loopback port for an unreachable Cloud Storage, a local HTTP stand-in for the Hub.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_runs import ctrl_c_as_at_a_terminal, one_error_line, run_cli
from hub_standin import hub_standin
from midi_corpus import packaged_midi_files
from tiny_run import TINY_RUN

from musenet_jax.app.bundle import file_checksums
from musenet_jax.cli.main import main

REPO = pathlib.Path(__file__).resolve().parents[2]
SETS = [arg for override in TINY_RUN for arg in ("--set", override)]


def _cli_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def _cli_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "musenet_jax.cli.main", *argv]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_copy(six_step_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(six_step_run, copy)
    return copy


# --- 7. numbers: finite and in range; silence is never the best candidate ------------------------


@pytest.mark.slow  # loads JAX and the bundled model's config
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "--temperature", "inf"], "sample.temperature must be finite and >= 0"),
        (["generate", "--temperature", "nan"], "sample.temperature must be finite and >= 0"),
        (["generate", "--top-p", "nan"], "sample.top_p must be in (0, 1]"),
        (["generate", "--seconds", "inf"], "sample.seconds must be positive and at most 3600"),
    ],
)
def test_sampling_numbers_that_are_not_finite_are_one_line(argv, expected, tmp_path, capsys):
    request = ["--composer", "bach", "--instruments", "piano", "--out", str(tmp_path / "out")]
    rc, out, err = run_cli(capsys, [*argv, *request])
    assert rc == 2
    assert expected in one_error_line(err, "generate")
    assert not list((tmp_path / "out").glob("sample_*"))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["prepare", "--file-timeout", "-1"],
            "--file-timeout must be a positive number of seconds, got -1.0",
        ),
        (
            ["prepare", "--file-timeout", "nan"],
            "--file-timeout must be a positive number of seconds, got nan",
        ),
        (["prepare", "--limit", "-1"], "--limit must be at least 1 (how many input files to use), got -1"),
        (["eval", "--max-pieces", "0"], "--max-pieces must be at least 1, got 0"),
        (["eval", "--num-samples", "-2"], "--num-samples must be >= 0"),
        (["eval", "--position-bucket", "0"], "--position-bucket must be at least 1, got 0"),
        (["eval", "--watch", "--poll-s", "nan"], "--poll-s must be a positive number of seconds, got nan"),
    ],
)
def test_prepare_and_eval_numbers_out_of_range_are_one_line(argv, expected, tmp_path, capsys):
    extra = ["--data-dir", str(tmp_path / "tfds")] if argv[0] == "prepare" else []
    rc, out, err = run_cli(capsys, [*argv, *extra])
    assert rc == 2
    assert expected in one_error_line(err, argv[0])
    assert not (tmp_path / "tfds").exists()


@pytest.mark.slow  # app.generate imports JAX
def test_a_candidate_without_notes_is_ranked_last_whatever_its_score():
    from musenet_jax.app.generate import rank_candidates

    entries = [
        {"sample": 0, "critic_score": 0.997, "mean_logprob": -13.8, "new_notes": 0},  # 200 pads
        {"sample": 1, "critic_score": 0.40, "mean_logprob": -1.6, "new_notes": 31},
        {"sample": 2, "critic_score": 0.60, "mean_logprob": -1.9, "new_notes": 12},
    ]
    assert [e["sample"] for e in rank_candidates(entries, by_critic=True)] == [2, 1, 0]
    assert [e["sample"] for e in rank_candidates(entries, by_critic=False)] == [1, 2, 0]


@pytest.mark.slow  # app.generate imports JAX
def test_a_droning_candidate_is_ranked_after_the_others_and_said():
    """The failure likelihood ranking fell into: a melody stuck on one pitch scores as very likely."""
    from musenet_jax.app.generate import drone_entry, drone_warning, rank_candidates
    from musenet_jax.encoding.events import Events

    onsets = np.arange(40) * 0.25
    stuck = Events.from_columns(
        onsets, onsets + 0.2, np.zeros(40, np.int8), np.full(40, 62, np.int16), np.full(40, 80, np.int16)
    )
    tune = stuck.replace(pitch=(60 + np.array([0, 2, 4, 5, 7, 9, 11, 12] * 5)).astype(np.int16))
    assert drone_entry(tune) is None
    held = drone_entry(stuck)
    assert held == {"pitch": "D4", "pitch_share": 1.0, "repeated_share": 1.0}
    entries = [
        {"sample": 0, "critic_score": None, "mean_logprob": -0.2, "new_notes": 40, "drone": held},
        {"sample": 1, "critic_score": None, "mean_logprob": -1.6, "new_notes": 40, "drone": None},
    ]
    assert [e["sample"] for e in rank_candidates(entries, by_critic=False)] == [1, 0]
    assert "sample_0 drones on D4 (100% of its melody" in drone_warning(entries[0])


# --- 12. a torn last line of metrics.jsonl --------------------------------------------------------


def _torn_metrics(workdir: pathlib.Path, steps: int) -> None:
    from musenet_jax.train.metrics import MetricsLogger

    logger = MetricsLogger(workdir, start_step=0, total_steps=steps, enabled=True, progress=False)
    for step in range(1, steps + 1):
        logger.log(step, {"loss": 4.0 - 0.1 * step})
    logger.close()
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 3.')  # a kill mid-append


def test_plot_keeps_the_good_lines_of_a_torn_metrics_file(tmp_path, capsys):
    _torn_metrics(tmp_path, 4)
    rc, out, err = run_cli(capsys, ["plot", str(tmp_path), "-o", str(tmp_path / "curve.png")])
    assert rc == 0, err
    assert f"step 4: train {3.6 / math.log(2):.3f} bits/token" in out
    assert err.count("ends in a torn line") == 1 and "the 4 records before it are kept" in err
    assert "Traceback" not in err and (tmp_path / "curve.png").stat().st_size > 0


def test_logging_again_after_a_torn_line_leaves_no_fragment(tmp_path, capsys):
    from musenet_jax.train.metrics import MetricsLogger, read_metrics

    _torn_metrics(tmp_path, 4)
    logger = MetricsLogger(tmp_path, start_step=4, total_steps=6, enabled=True, progress=False)
    logger.log(5, {"loss": 3.5})
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]  # every line parses
    assert capsys.readouterr().err.count("torn line") == 1
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_a_damaged_line_before_the_last_is_one_line_with_its_number(tmp_path, capsys):
    _torn_metrics(tmp_path, 3)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('\n{"step": 6, "loss": 3.0}\n')
    rc, out, err = run_cli(capsys, ["plot", str(tmp_path)])
    assert rc == 2
    assert "metrics.jsonl line 4 is not a JSON record" in one_error_line(err, "plot")


@pytest.mark.slow
def test_train_resumes_past_a_torn_metrics_line(run_copy, music21_data_dir, capsys):
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')
    argv = ["train", "--workdir", str(run_copy), "--steps", "7", "--data-dir", str(music21_data_dir), *SETS]
    rc, out, err = run_cli(capsys, argv)
    assert rc == 0, err
    assert "trained to step 7; resumed from step 6" in out
    assert (out + err).count("ends in a torn line") == 1 and "Traceback" not in err
    steps = [json.loads(line)["step"] for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 7 and steps == sorted(steps)


# --- 13. export --push-to-hub against a local stand-in of the Hub ---------------------------------


@pytest.mark.slow
def test_export_pushes_every_bundle_file_to_the_hub(tiny_bundle, tmp_path):
    out = tmp_path / "bundle"
    with hub_standin() as hub:
        done = subprocess.run(
            _cli_command(
                "export", "--checkpoint", str(tiny_bundle), "--out", str(out), "--push-to-hub", "me/tiny"
            ),
            env=_cli_env(**hub.environment(str(tmp_path / "hf_home"))),
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"pushed to {hub.url}/me/tiny; load it with --checkpoint hf://me/tiny" in done.stdout
    assert hub.repos == ["me/tiny"]
    written = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in written and "bundle.json" in written
    assert hub.files["me/tiny"] == written  # every file, byte for byte


@pytest.mark.slow
def test_a_hub_that_refuses_the_push_is_one_line(tiny_bundle, tmp_path):
    with hub_standin(refuse_with=403) as hub:
        done = subprocess.run(
            _cli_command(
                "export",
                "--checkpoint",
                str(tiny_bundle),
                "--out",
                str(tmp_path / "b"),
                "--push-to-hub",
                "me/x",
            ),
            env=_cli_env(**hub.environment(str(tmp_path / "hf_home"))),
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 2
    line = one_error_line(done.stderr, "export")
    assert "--push-to-hub me/x: the Hub answered" in line and "403" in line
    assert (tmp_path / "b" / "bundle.json").is_file()  # the local bundle stays


# --- 15. a gs:// checkpoint without network --------------------------------------------------------


@pytest.mark.parametrize("argv", [["eval"], ["generate", "--list-composers"]])
def test_an_unreachable_bucket_is_one_line_at_once(argv, monkeypatch, capsys):
    port = _closed_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    rc, out, err = run_cli(capsys, [*argv, "--checkpoint", "gs://musenet-test/run"])
    assert rc == 2
    line = one_error_line(err, argv[0])
    assert f"gs://musenet-test/run: cannot reach Google Cloud Storage at 127.0.0.1:{port}" in line
    assert "STORAGE_EMULATOR_HOST" in line and "or use a local path" in line


def test_without_a_credentials_file_the_line_says_how_to_log_in(monkeypatch, tmp_path):
    from musenet_jax.storage import gcs_credentials_hint

    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    assert "gcloud auth application-default login" in gcs_credentials_hint()
    (tmp_path / "application_default_credentials.json").write_text("{}")
    assert gcs_credentials_hint() == ""


# --- 16, 24. eval over many steps needs a run ------------------------------------------------------


def test_eval_all_steps_without_a_checkpoint_or_on_a_bundle_is_one_line(capsys):
    from musenet_jax.app.sources import bundled_model_dir

    rc, out, err = run_cli(capsys, ["eval", "--all-steps"])
    assert rc == 2
    assert "add --checkpoint WORKDIR" in one_error_line(err, "eval")
    rc, out, err = run_cli(capsys, ["eval", "--watch", "--checkpoint", str(bundled_model_dir())])
    assert rc == 2
    line = one_error_line(err, "eval")
    assert "is an exported bundle, which holds one step" in line and "train first" not in line


# --- 17, 23. serve: the address is checked before the model loads ---------------------------------


def test_serve_refuses_a_port_out_of_range_a_busy_port_and_a_bad_host(capsys):
    if importlib.util.find_spec("gradio") is None:  # not imported: that alone takes seconds
        pytest.skip("serve needs the demo extra (Gradio)")
    for port in ("99999", "-1", "0"):
        rc, out, err = run_cli(capsys, ["serve", "--port", port])
        assert rc == 2 and out == ""
        assert f"--port must be in 1..65535, got {port}" in one_error_line(err, "serve")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, out, err = run_cli(capsys, ["serve", "--port", str(port)])
    assert rc == 2 and out == ""  # no URL printed
    assert f"port {port} on 127.0.0.1 is in use by another program; try another --port" in one_error_line(
        err, "serve"
    )
    rc, out, err = run_cli(capsys, ["serve", "--host", "no-such-host.invalid"])
    assert rc == 2 and out == ""
    assert "cannot resolve --host no-such-host.invalid" in one_error_line(err, "serve")


# --- 18. damaged JSON files, a platform JAX cannot start, Ctrl-C during a save --------------------


@pytest.mark.slow  # the tiny bundle is trained first
@pytest.mark.parametrize(
    ("name", "remedy"), [("bundle.json", "export it again"), ("note_facts.json", "delete it")]
)
def test_a_damaged_json_file_of_a_bundle_is_one_line_naming_it(name, remedy, tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    text = (bundle / name).read_text()
    (bundle / name).write_text(text[: len(text) // 2])  # cut short
    if name != "bundle.json":  # a file the checksums cover: as if the export itself had written it so
        info = json.loads((bundle / "bundle.json").read_text())
        (bundle / "bundle.json").write_text(json.dumps({**info, "sha256": file_checksums(bundle)}))
    rc, out, err = run_cli(capsys, ["eval", "--checkpoint", str(bundle), "--num-samples", "0"])
    assert rc == 2
    line = one_error_line(err, "eval")
    assert f"{bundle / name} is not valid JSON (" in line and remedy in line


@pytest.mark.slow  # a subprocess that imports JAX
def test_a_platform_jax_cannot_start_is_one_line():
    done = subprocess.run(
        _cli_command("eval", "--num-samples", "0", "--max-pieces", "1"),
        env=_cli_env(JAX_PLATFORMS="rocm"),  # no such backend in a CPU, CUDA or TPU install
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr, "eval")
    assert "JAX_PLATFORMS=rocm asks for a platform JAX cannot start" in line and "cpu" in line


@pytest.mark.slow
def test_three_ctrl_c_during_the_stop_save_exit_non_zero_without_a_traceback(music21_data_dir, tmp_path):
    workdir = tmp_path / "run"
    sets = [*SETS, "--set", "train.checkpoint_every=100000"]
    proc = subprocess.Popen(
        _cli_command(
            "train",
            "--workdir",
            str(workdir),
            "--steps",
            "100000",
            "--data-dir",
            str(music21_data_dir),
            *sets,
        ),
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_at_a_terminal,
    )
    deadline = time.monotonic() + 300
    while not (workdir / "metrics.jsonl").is_file() or not (workdir / "metrics.jsonl").read_text().count(
        "\n"
    ):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not log a step within 300 s"
        time.sleep(0.1)
    for _ in range(3):  # the first asks for the stop save, the next two arrive while it is written
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "SIGINT: checkpoint saved at step" in out
    from musenet_jax.train.checkpoint import RunCheckpoints

    saved = RunCheckpoints(workdir, read_only=True).all_steps()
    assert len(saved) == 1 and f"saved at step {saved[0]};" in out


# --- 21. train's exit status and lines -------------------------------------------------------------


@pytest.mark.slow
def test_steps_below_the_runs_step_say_nothing_was_trained(run_copy, music21_data_dir, capsys):
    argv = ["train", "--workdir", str(run_copy), "--steps", "3", "--data-dir", str(music21_data_dir), *SETS]
    rc, out, err = run_cli(capsys, argv)
    assert rc == 0, err
    assert f"nothing trained: {run_copy} is at step 6 already, not before step 3" in out
    assert "trained to" not in out


@pytest.mark.slow
def test_a_damaged_step_asked_for_by_number_names_the_readable_ones(run_copy, capsys):
    for path in (run_copy / "checkpoints" / "6" / "params" / "d").iterdir():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rc, out, err = run_cli(
        capsys, ["generate", "--checkpoint", str(run_copy), "--step", "6", "--list-composers"]
    )
    assert rc == 2
    line = one_error_line(err, "generate")
    assert "checkpoint step 6 in" in line and "is damaged" in line
    assert "steps that pass their checks: 3 (give --step 3" in line and "no readable checkpoint" not in line


def test_exit_status_of_a_train_stopped_by_a_signal():
    from musenet_jax.train.loop import TrainSummary

    summary = TrainSummary("w", 0, 5, None, None, None, None, 0, None, target_step=10)
    assert summary.exit_status == 0
    assert TrainSummary("w", 0, 5, None, None, None, None, 0, "SIGINT").exit_status == 130
    assert TrainSummary("w", 0, 5, None, None, None, None, 0, "SIGTERM").exit_status == 143
    assert (
        TrainSummary("w", 0, 5, None, None, None, None, 0, "stop requested by another process").exit_status
        == 1
    )


# --- 20. advice that works: the bundled model on one's own folder ----------------------------------


@pytest.mark.slow
def test_the_advice_for_a_folder_with_new_composers_works(tmp_path, capsys):
    files = packaged_midi_files()
    own, known = tmp_path / "own", tmp_path / "known"
    for n, path in enumerate(files):
        for root, folder in ((own, ("bach", "Bill Evans")[n % 2]), (known, "bach" if n % 2 == 0 else "")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / folder / path.name)
    eval_args = ["--set", "data.source=midi_dir", "--num-samples", "0", "--max-pieces", "1"]
    for folder in (own, known):
        argv = [
            "prepare",
            "--source",
            "midi_dir",
            "--midi-dir",
            str(folder),
            "--data-dir",
            str(folder) + "_tfds",
        ]
        assert main([*argv, "--workers", "1", "--json"]) == 0
    capsys.readouterr()

    rc, out, err = run_cli(capsys, ["eval", "--data-dir", f"{own}_tfds", *eval_args])
    assert rc == 2
    line = one_error_line(err, "eval")
    assert "composer labels the model (or config) lacks: bill_evans" in line
    assert (
        "files directly in the folder are `unknown`" in line and "no --config for the bundled model" in line
    )
    assert "rerun `musenet-jax prepare` with this config" not in line
    # what it says: known composer sub-folders (the others' files directly in the folder), no --config
    rc, out, err = run_cli(capsys, ["eval", "--data-dir", f"{known}_tfds", *eval_args])
    assert rc == 0, err
    assert "bits/token" in out


# --- 24. smaller ------------------------------------------------------------------------------------


def test_a_folder_given_as_config_is_one_line(tmp_path, capsys):
    rc, out, err = run_cli(capsys, ["train", "--config", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert rc == 2
    line = one_error_line(err, "train")
    assert f"--config {tmp_path} is a folder; expected a YAML file or a bundled config name" in line
    assert "does not exist" not in line


def test_rerank_says_why_a_statistic_is_undefined():
    from musenet_jax.app.rerank import reranking_table
    from musenet_jax.eval.music_stats import STAT_NAMES

    none = dict.fromkeys(STAT_NAMES)
    report = {
        "requests": 2,
        "candidates": 3,
        "critic": none,
        "likeliest": none,
        "random": {n: {"mean": None, "std": None} for n in STAT_NAMES},
        "critic_beats_random": none,
        "silent_candidates": 6,
        "silent_references": 0,
        "references": 5,
        "seconds": 2.0,
    }
    last = reranking_table(report).splitlines()[-1]
    assert last.startswith("- = undefined: 6 of the 6 candidates have no notes")
    defined = {**report, "critic": dict.fromkeys(STAT_NAMES, 0.5), "silent_candidates": 0}
    assert reranking_table(defined).splitlines()[-1].startswith("| critic beats random |")
