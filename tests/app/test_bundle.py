"""Export -> load round trips of a real tiny run (Orbax checkpoint, a stored critic) through a bundle.

float32 bundles give the run's logits exactly; bfloat16 bundles give exactly the logits of the run's
parameters rounded to bfloat16, and the run's own logits within bfloat16 rounding. The critic, the note
facts and the config travel with the parameters; a bundle of another encoding is refused in one line."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_inputs import batch

from musenet_jax.app.bundle import file_checksums
from musenet_jax.app.export import export_bundle, portable_config
from musenet_jax.app.run import load_run
from musenet_jax.cli.main import main
from musenet_jax.critic.scoring import critic_logits
from musenet_jax.critic.store import CriticMeta, load_critic, save_critic
from musenet_jax.data.config import DataConfig
from musenet_jax.errors import UserError


@pytest.fixture(scope="module")
def critic_run(tiny_run, tmp_path_factory):
    """A copy of the 3-step tiny run with a stored critic head (moved off the language model's head, so it
    shows)."""
    workdir = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(tiny_run, workdir)
    run = load_run(workdir)
    head = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))["critic"]
    head = jax.tree.map(lambda a: a + 0.25, head)
    meta = CriticMeta(False, 5, 0.75, 4, 4, run.step, run.tokenizer.vocab.fingerprint())
    save_critic(workdir, {"critic": head}, meta)
    return workdir


def logits_of(run, inputs=None) -> np.ndarray:
    inputs = inputs or batch(length=run.cfg.model.context)
    return np.asarray(run.model(inputs["inputs"], inputs["times"], inputs["durations"]))


def params_of(run) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(nnx.to_pure_dict(nnx.state(run.model, nnx.Param)))]


@pytest.mark.slow
def test_float32_bundle_gives_identical_logits_critic_and_facts(critic_run, tmp_path):
    run = load_run(critic_run)
    report = export_bundle(run, tmp_path / "b32")
    bundle = load_run(tmp_path / "b32")
    assert bundle.kind == "bundle" and bundle.step == run.step == 3
    np.testing.assert_array_equal(logits_of(bundle), logits_of(run))
    for a, b in zip(params_of(bundle), params_of(run), strict=True):
        np.testing.assert_array_equal(a, b)
    assert bundle.cfg == portable_config(run.cfg) and bundle.note_facts == run.note_facts is not None
    assert str(tmp_path.parent) not in (tmp_path / "b32" / "config.json").read_text()  # no exporter's paths
    assert bundle.cfg.data.data_dir == DataConfig().data_dir != run.cfg.data.data_dir
    pieces = [run.tokenizer.encode(p) for p in __import__("midi_corpus").packaged_midi_files()[:2]]
    run_critic, _ = load_critic(critic_run, run.model, run.tokenizer.vocab.fingerprint())
    bundle_critic, meta = load_critic(bundle.workdir, bundle.model, bundle.tokenizer.vocab.fingerprint())
    np.testing.assert_array_equal(
        critic_logits(bundle_critic, bundle.tokenizer, pieces),
        critic_logits(run_critic, run.tokenizer, pieces),
    )
    assert meta.heldout_auc == 0.75 and report.critic_auc == 0.75
    assert set(report.files) >= {
        "bundle.json",
        "config.json",
        "vocab.json",
        "model.safetensors",
        "note_facts.json",
        "README.md",
        "critic/params.safetensors",
        "critic/critic.json",
    }
    card = (tmp_path / "b32" / "README.md").read_text()
    header = card.split("---")[1]
    assert "library_name: musenet-jax" in header and "license: apache-2.0" in header
    assert "- music21-corpus" in header and "- midi" in header and "ROC AUC 0.750" in card
    vocab = json.loads((tmp_path / "b32" / "vocab.json").read_text())
    assert vocab["fingerprint"] == run.tokenizer.vocab.fingerprint() and len(vocab["tokens"]) == vocab["size"]


@pytest.mark.slow
def test_bfloat16_bundle_is_the_rounded_parameters(critic_run, tmp_path):
    run = load_run(critic_run)
    f32 = export_bundle(run, tmp_path / "b32")
    bf16 = export_bundle(run, tmp_path / "b16", dtype="bfloat16")
    assert bf16.files["model.safetensors"] < 0.51 * f32.files["model.safetensors"]
    bundle = load_run(tmp_path / "b16")
    rounded = jax.tree.map(
        lambda a: a.astype(jnp.bfloat16).astype(jnp.float32), nnx.state(run.model, nnx.Param)
    )
    reference = nnx.merge(nnx.graphdef(run.model), rounded, nnx.state(run.model, nnx.Not(nnx.Param)))
    for a, b in zip(params_of(bundle), jax.tree.leaves(rounded), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    inputs = batch(length=run.cfg.model.context)
    got = logits_of(bundle, inputs)
    np.testing.assert_array_equal(
        got, np.asarray(reference(inputs["inputs"], inputs["times"], inputs["durations"]))
    )
    np.testing.assert_allclose(got, logits_of(run, inputs), atol=0.05, rtol=0.02)


@pytest.mark.slow
def test_bundle_of_another_encoding_is_refused_in_one_line(critic_run, tmp_path, capsys):
    export_bundle(load_run(critic_run), tmp_path / "b")
    vocab_path = tmp_path / "b" / "vocab.json"
    vocab = json.loads(vocab_path.read_text())
    vocab["fingerprint"] = "0" * 64  # as written by a musenet-jax whose vocabulary differs
    vocab_path.write_text(json.dumps(vocab))
    info_path = tmp_path / "b" / "bundle.json"  # whose export summed its own files
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "sha256": file_checksums(tmp_path / "b")}))
    with pytest.raises(UserError, match="exported with another encoding .*fingerprint 000000000000"):
        load_run(tmp_path / "b")
    assert main(["eval", "--checkpoint", str(tmp_path / "b"), "--num-samples", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another encoding" in err


@pytest.mark.slow
def test_export_cli_writes_a_bfloat16_bundle_with_its_scores(critic_run, tmp_path, capsys):
    assert (
        main(["eval", "--checkpoint", str(critic_run), "--num-samples", "0", "--max-pieces", "1", "--json"])
        == 0
    )
    scores = tmp_path / "eval.json"
    scores.write_text(capsys.readouterr().out)
    out = tmp_path / "bundle"
    args = ["export", "--checkpoint", str(critic_run), "--out", str(out), "--dtype", "bfloat16"]
    assert main([*args, "--eval-json", str(scores), "--name", "musenet-tiny"]) == 0
    said = capsys.readouterr().out.strip()
    assert said.startswith(f"wrote {out}: ") and "parameters in bfloat16, critic (held-out AUC 0.750)" in said
    card = (out / "README.md").read_text()
    bits = json.loads(scores.read_text())["bits_per_token"]
    assert "# musenet-tiny" in card and f"**{bits:.3f} bits per token** on the `test` split" in card
    assert main(args) == 0  # an earlier bundle in --out is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["export", "--checkpoint", str(critic_run), "--out", str(tmp_path / "other")]) == 2
    assert "holds files that are not a bundle" in capsys.readouterr().err
    assert main(["critic", "train", "--checkpoint", str(out), "--fakes", str(tmp_path)]) == 2
    assert "is an exported bundle" in capsys.readouterr().err
