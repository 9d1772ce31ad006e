"""Everything in a bucket: prepare -> train -> resume -> eval -> generate -> export -> generate from the
bundle, with gs:// paths only, against a GCS emulator on localhost (no mounted filesystem); the resumed run
equals an uninterrupted local one and the bucket's bundle composes what its run does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from gcs_emulator import BUCKET, gcs_emulator
from midi_corpus import packaged_midi_files
from tiny_run import TINY_RUN

SETS = [arg for override in TINY_RUN for arg in ("--set", override)]


def _musenet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def _losses(metrics_jsonl: str) -> dict[int, float]:
    rows = [json.loads(line) for line in metrics_jsonl.splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
def test_a_run_lives_in_a_bucket_from_prepare_to_generate(tmp_path, monkeypatch):
    midi = tmp_path / "midi"
    for n, path in enumerate(packaged_midi_files()):
        folder = midi / ("bach" if n % 2 else "mozart")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    with gcs_emulator() as gcs:
        env = {**os.environ, **gcs, "MUSENET_JAX_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
        data, run, out = f"gs://{BUCKET}/data", f"gs://{BUCKET}/run", f"gs://{BUCKET}/out"
        made = _musenet(env, "prepare", "--source", "midi_dir", "--midi-dir", str(midi), "--data-dir", data)
        assert f"dataset: {data}/musenet_midi/midi_dir" in made.stdout
        assert not (tmp_path / "gs:").exists()  # nothing written to a local folder named after the URL
        again = _musenet(env, "prepare", "--source", "midi_dir", "--midi-dir", str(midi), "--data-dir", data)
        assert "reused" in again.stdout

        train = ["train", "--config", "tiny", *SETS, "--set", "data.source=midi_dir", "--data-dir", data]
        train += ["--set", "train.steps=6"]
        _musenet(env, *train, "--workdir", run, "--steps", "3")  # stopped at 3 of a 6-step schedule
        resumed = _musenet(env, *train, "--workdir", run)
        assert "resumed from step 3" in resumed.stdout + resumed.stderr
        _musenet(env, *train, "--workdir", str(tmp_path / "local_run"))

        evaluated = _musenet(env, "eval", "--checkpoint", run, "--all-steps", "--num-samples", "0")
        assert "step 3:" in evaluated.stdout and "step 6:" in evaluated.stdout
        composed = _musenet(
            env, "generate", "--checkpoint", run, "--composer", "bach", "--instruments", "piano", "--out", out
        )
        assert f"to {out}" in composed.stdout
        bundle, out_bundle = f"gs://{BUCKET}/bundle", f"gs://{BUCKET}/out_bundle"
        _musenet(env, "export", "--checkpoint", run, "--out", bundle)  # float32: the run's exact parameters
        generate = ["generate", "--composer", "bach", "--instruments", "piano"]
        _musenet(env, *generate, "--checkpoint", bundle, "--out", out_bundle)

        for name, value in gcs.items():  # before gcsfs is first imported here: it reads them then
            monkeypatch.setenv(name, value)
        from etils import epath

        bucket = epath.Path(f"gs://{BUCKET}")
        in_bucket = _losses((bucket / "run" / "metrics.jsonl").read_text())
        local = _losses((tmp_path / "local_run" / "metrics.jsonl").read_text())
        assert sorted(in_bucket) == sorted(local) == [1, 2, 3, 4, 5, 6]
        for step in (4, 5, 6):  # the resumed steps: same data position, optimizer state and RNG
            assert in_bucket[step] == pytest.approx(local[step], rel=1e-5)
        for name in (
            "config.json",
            "note_facts.json",
            "eval/step_3.json",
            "eval/step_6.json",
            "eval/summary.md",
        ):
            assert (bucket / "run" / name).exists(), name
        assert any((bucket / "run" / "tb").iterdir())
        assert not (bucket / "run" / "train.lock").exists()  # released at the end
        ranking = json.loads((bucket / "out" / "ranking.json").read_text())
        for candidate in ranking["candidates"]:
            assert (bucket / "out" / candidate["midi"]).stat().length > 0
        assert all((bucket / "bundle" / name).exists() for name in ("bundle.json", "model.safetensors"))
        for k in range(len(ranking["candidates"])):  # the bundle in the bucket composes what the run does
            from_run = json.loads((bucket / "out" / f"sample_{k}.json").read_text())["ids"]
            assert json.loads((bucket / "out_bundle" / f"sample_{k}.json").read_text())["ids"] == from_run


LISTINGS = """
import pathlib, sys
from musenet_jax.data import bucket

data_dir, staged = sys.argv[1], pathlib.Path(sys.argv[2])
folder = bucket.epath.Path(data_dir) / "musenet_midi" / "midi_dir"
bucket.upload_dataset(staged, folder)
listed = []
real = bucket.files_under
bucket.files_under = lambda folder: listed.append(folder) or real(folder)
reads = [bucket.local_data_dir(data_dir, "midi_dir") for _ in range(3)]
(staged / "1.0.0" / "shard").write_text("new notes")
bucket.upload_dataset(staged, folder)
after = bucket.local_data_dir(data_dir, "midi_dir")
copy = pathlib.Path(after) / "musenet_midi" / "midi_dir" / "1.0.0" / "shard"
print(len(set(reads)), len(listed), after == reads[0], copy.read_text().replace(" ", "_"))
"""


@pytest.mark.slow
def test_a_bucket_dataset_is_brought_up_to_date_once_per_process(tmp_path):
    """Labels, the train and validation splits and note facts all read the local copy: one listing of the
    bucket per process, and an upload by the same process makes the next read bring the copy up to date."""
    staged = tmp_path / "staged"
    (staged / "1.0.0").mkdir(parents=True)
    (staged / "1.0.0" / "shard").write_text("notes")
    with gcs_emulator() as gcs:
        env = {**os.environ, **gcs, "MUSENET_JAX_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
        done = subprocess.run(
            [sys.executable, "-c", LISTINGS, f"gs://{BUCKET}/data", str(staged)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    same_dir, listings, same_after, content = done.stdout.split()
    # three reads list the bucket once, the second upload lists what it replaces, the read after it again
    assert same_dir == "1" and same_after == "True" and int(listings) == 3, done.stdout
    assert content == "new_notes"
