"""Every --checkpoint source resolves through one function: bundles on the Hugging Face Hub from a cache
filled in the layout huggingface_hub writes (no network: HF_HUB_OFFLINE=1), the bundled model (pointed at a
tmp bundle with MUSENET_BUNDLED_MODEL) when no --checkpoint is given, and one line for anything else."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import huggingface_hub
import pytest
from huggingface_hub.file_download import repo_folder_name

from musenet_jax.app.sources import BUNDLED_ENV, resolve_source
from musenet_jax.cli.main import main
from musenet_jax.errors import UserError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(hub_cache: pathlib.Path, repo_id: str, bundle: pathlib.Path, revisions=("main",)) -> None:
    """The cache huggingface_hub leaves after downloading `bundle` as `repo_id` at `revisions` (branch or tag
    names of one commit): content-named blobs, a snapshot folder of relative links to them, and
    refs/REVISION naming the commit."""
    repo = hub_cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    for file in sorted(p for p in bundle.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / file.relative_to(bundle)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    for revision in revisions:
        (repo / "refs" / revision).write_text(COMMIT)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hub cache, downloads off (huggingface_hub read its cache location when imported)."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.mark.slow
def test_hub_bundle_resolves_from_the_cache_offline(tiny_bundle, offline_hub):
    fill_hub_cache(offline_hub, "musenet/tiny", tiny_bundle, revisions=("main", "v1"))
    for spec in ("hf://musenet/tiny", "hf://musenet/tiny@v1", f"hf://musenet/tiny@{COMMIT}"):
        source = resolve_source(spec)
        assert source.kind == "bundle" and source.given == spec
        assert pathlib.Path(source.path) == offline_hub / "models--musenet--tiny" / "snapshots" / COMMIT
    with pytest.raises(
        UserError, match=r"hf://musenet/other is not in the Hugging Face cache .*HF_HUB_OFFLINE"
    ):
        resolve_source("hf://musenet/other")
    with pytest.raises(UserError, match="write a Hub bundle as hf://ORG/NAME"):
        resolve_source("hf://tiny")


def test_folders_that_are_neither_run_nor_bundle_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_source(tmp_path / "absent")
    with pytest.raises(UserError, match=r"neither a training run \(no checkpoints/\) nor an exported bundle"):
        resolve_source(tmp_path)


def test_no_checkpoint_and_no_bundled_model_says_what_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(BUNDLED_ENV, str(tmp_path))
    assert (
        main(["generate", "--composer", "bach", "--instruments", "piano", "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no bundled model is installed" in err and "pass --checkpoint" in err


@pytest.mark.slow
def test_generate_without_checkpoint_uses_the_bundled_model(tiny_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(BUNDLED_ENV, str(tiny_bundle))
    out = tmp_path / "out"
    args = [
        "generate",
        "--composer",
        "bach",
        "--instruments",
        "piano",
        "--num-samples",
        "1",
        "--out",
        str(out),
    ]
    assert main([*args, "--max-new-tokens", "16", "--set", "sample.rank_by=critic"]) == 0
    assert f"no trained critic in {tiny_bundle}" in capsys.readouterr().out  # asked for, falls back
    ranking = json.loads((out / "ranking.json").read_text())
    assert (
        (out / "sample_0.mid").is_file() and ranking["candidates"] and ranking["ranked_by"] == "mean_logprob"
    )
    assert resolve_source(None).path == str(tiny_bundle) == resolve_source("bundled").path


@pytest.mark.slow
def test_generate_from_hub_bundle_in_a_fresh_process_offline(tiny_bundle, tmp_path):
    """The real command with only environment variables: HF_HOME's cache, HF_HUB_OFFLINE=1."""
    fill_hub_cache(tmp_path / "hf_home" / "hub", "musenet/tiny", tiny_bundle)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("HF_HUB_CACHE", None)
    command = [sys.executable, "-m", "musenet_jax.cli.main", "generate", "--checkpoint", "hf://musenet/tiny"]
    command += ["--composer", "bach", "--instruments", "piano,strings", "--num-samples", "2"]
    command += ["--max-new-tokens", "16", "--out", str(tmp_path / "out")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 2 candidates" in proc.stdout and (tmp_path / "out" / "sample_1.mid").is_file()
