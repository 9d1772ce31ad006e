"""`train --init-from`: fine-tuning a bundle on one's own MIDI folder (prepare --source midi_dir) lowers the
validation bits/token of that folder's split below the bundle's own; a folder with a new composer label
fine-tunes from a bundle as from a run; another encoding or architecture is refused in one line before any
data is read."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from midi_corpus import export_corpus_scores, packaged_midi_files
from tiny_run import TINY_RUN

from musenet_jax.app.evaluate import evaluate
from musenet_jax.app.init_from import initial_params
from musenet_jax.app.run import load_run, run_composers
from musenet_jax.cli.main import main
from musenet_jax.config import load_config
from musenet_jax.data.labels import with_dataset_labels
from musenet_jax.data.prepare import prepare
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.train.init_from import fine_tune_params

SETS = [arg for item in TINY_RUN for arg in ("--set", item)]


def validation_bits(source, data_dir) -> float:
    run = load_run(source, overrides=[f"data.data_dir={data_dir}", "data.source=midi_dir"])
    return evaluate(run, split="validation", num_samples=0, show_progress=False)["bits_per_token"]


@pytest.mark.slow
def test_fine_tuning_a_bundle_on_a_midi_folder_lowers_validation_bits(tiny_bundle, tmp_path, capsys):
    midi = tmp_path / "my_midi"
    export_corpus_scores(midi / "bach")
    for path in packaged_midi_files():
        (midi / "mozart").mkdir(exist_ok=True)
        shutil.copy(path, midi / "mozart" / path.name)
    data = tmp_path / "tfds"
    prepare("midi_dir", str(data), midi_dir=str(midi), workers=1, show_progress=False)
    before = validation_bits(tiny_bundle, data)

    workdir = tmp_path / "fine_tuned"
    args = ["train", "--config", "tiny", *SETS, "--set", "data.source=midi_dir", "--data-dir", str(data)]
    args += ["--set", "train.learning_rate=3e-3", "--workdir", str(workdir), "--steps", "30"]
    assert main([*args, "--init-from", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert f"starting from the parameters of {tiny_bundle} (step 3)" in out and "trained to step 30" in out
    after = validation_bits(workdir, data)
    with capsys.disabled():
        print(f"\nvalidation bits/token on the folder's split: bundle {before:.3f}, fine-tuned {after:.3f}")
    assert after < before

    assert main([*args, "--steps", "31", "--init-from", str(tiny_bundle)]) == 0  # the run resumes
    assert "the initial parameters are for a new run only" in capsys.readouterr().out


@pytest.mark.slow
def test_another_vocabulary_or_architecture_is_refused_in_one_line(tiny_bundle, tmp_path, capsys):
    base = ["train", "--config", "tiny", "--workdir", str(tmp_path / "w"), "--init-from", str(tiny_bundle)]
    assert main(base) == 2  # the tiny config's own d_model and context
    err = capsys.readouterr().err.strip()
    changes = "model.context 64 -> 128, model.d_model 32 -> 64"
    assert err.count("\n") == 0 and f"is another architecture ({changes})" in err
    assert main([*base, *SETS, "--set", "encoding.velocity_bins=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "uses another encoding (vocabulary fingerprint" in err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_bundle_takes_new_composer_labels_from_its_unknown(tiny_bundle, tmp_path, capsys):
    """A bundle fine-tunes onto a folder whose composer is outside the default list, as a run does: the new
    label's rows start from the bundle's `composer:unknown`, every other token keeps its own."""
    midi = tmp_path / "my_midi"
    for path in packaged_midi_files():
        (midi / "satie").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, midi / "satie" / path.name)
    data = tmp_path / "tfds"
    assert prepare("midi_dir", str(data), midi_dir=str(midi), workers=1, show_progress=False).new_labels == [
        "satie"
    ]
    cfg = load_config("tiny", [*TINY_RUN, f"data.data_dir={data}", "data.source=midi_dir"])
    labelled = cfg.replace(encoding=with_dataset_labels(cfg.data, cfg.encoding))
    initial = initial_params(str(tiny_bundle), cfg)  # checked against the config before any data is read
    said = []
    tuned = fine_tune_params(initial, labelled.model, Vocabulary(labelled.encoding), say=said.append)
    new_label = "new composer labels start from `unknown`: satie"
    assert said == [f"fine-tuning from step 3 of {tiny_bundle}; {new_label}"]
    old, new = initial.vocab, Vocabulary(labelled.encoding)
    for token, source in [("composer:satie", "composer:unknown"), ("composer:bach", "composer:bach")]:
        np.testing.assert_array_equal(
            tuned["embed"]["token"]["embedding"][new.id(token)],
            initial.params["embed"]["token"]["embedding"][old.id(source)],
        )
    assert new.id("wait:7") == old.id("wait:7") + 1  # satie moved every later id

    workdir = tmp_path / "tuned"
    args = ["train", "--config", "tiny", *SETS, "--set", "data.source=midi_dir", "--data-dir", str(data)]
    assert main([*args, "--workdir", str(workdir), "--steps", "1", "--init-from", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert new_label in out and "trained to step 1" in out
    assert run_composers(workdir)[-2:] == ("satie", "unknown")


@pytest.mark.slow
def test_a_plain_bundle_fine_tunes_into_the_anticipation_vocabulary(
    tiny_bundle, music21_data_dir, tmp_path, capsys
):
    """Anticipation's tokens only follow the others: a base trained without it takes them on, each control
    from its note's row and the flag from `start`; the fine-tuned run can accompany."""
    cfg = load_config("tiny", [*TINY_RUN, f"data.data_dir={music21_data_dir}", "encoding.anticipation_s=5"])
    initial = initial_params(str(tiny_bundle), cfg)
    said = []
    new = Vocabulary(cfg.encoding)
    tuned = fine_tune_params(initial, cfg.model, new, say=said.append)
    old = initial.vocab
    assert not old.anticipates and new.anticipates and new.id("wait:7") == old.id("wait:7")
    assert said == [
        f"fine-tuning from step 3 of {tiny_bundle}; anticipation (5 s) is new to the base: its control "
        "tokens start from their notes', its flag from `start`"
    ]
    embedding, base_embedding = (
        tuned["embed"]["token"]["embedding"],
        initial.params["embed"]["token"]["embedding"],
    )
    assert embedding.shape[0] == new.size > old.size
    for token, source in [("ctl:piano:v3:C4", "piano:v3:C4"), ("anticipate", "start"), ("wait:7", "wait:7")]:
        np.testing.assert_array_equal(embedding[new.id(token)], base_embedding[old.id(source)])

    workdir = tmp_path / "anticipating"
    args = [
        "train",
        "--config",
        "tiny",
        *SETS,
        "--data-dir",
        str(music21_data_dir),
        "--workdir",
        str(workdir),
    ]
    args += ["--set", "encoding.anticipation_s=5", "--steps", "1", "--init-from", str(tiny_bundle)]
    assert main(args) == 0
    assert "anticipation (5 s) is new to the base" in capsys.readouterr().out
    run = load_run(str(workdir))
    assert run.tokenizer.vocab.anticipates and run.step == 1
