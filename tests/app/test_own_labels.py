"""Your own labels, end to end: a MIDI folder whose composer folders are outside the default list prepares,
trains and generates by those names; a run fine-tuned on a corpus with one more label starts from its base
with every token's rows moved to the token's new id and the new label on the base's `unknown`."""

import json
import shutil

import numpy as np
import pytest
from flax import nnx
from midi_corpus import packaged_midi_files
from tiny_run import TINY_RUN

from musenet_jax.app.init_from import initial_params
from musenet_jax.app.run import load_run, run_composers
from musenet_jax.cli.main import main
from musenet_jax.config import config_from_dict, load_config
from musenet_jax.data.prepare import prepare
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.train.init_from import fine_tune_params
from musenet_jax.train.loop import train

FOLDERS = ("bach", "Bill Evans", "satie")


def midi_folder(root, folders):
    files = packaged_midi_files()
    for n, path in enumerate(files):
        folder = root / folders[n % len(folders)]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    return root


def midi_dir_config(data_dir, *more):
    return load_config("tiny", [*TINY_RUN, f"data.data_dir={data_dir}", "data.source=midi_dir", *more])


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_labels")
    data_dir = root / "tfds"
    summary = prepare("midi_dir", str(data_dir), midi_dir=str(midi_folder(root / "midi", FOLDERS)), workers=1)
    assert summary.new_labels == ["bill_evans", "satie"]
    said = []
    train(midi_dir_config(data_dir), root / "run", steps=3, say=said.append)
    assert "composer labels from the dataset: bill_evans, satie (besides the 22 configured)" in said
    return root


@pytest.mark.slow
def test_a_corpus_with_new_composer_folders_trains_and_generates_by_those_names(labelled_run, capsys):
    workdir = labelled_run / "run"
    saved = config_from_dict(json.loads((workdir / "config.json").read_text()))
    assert saved.encoding.composers[-2:] == ("bill_evans", "satie")
    assert run_composers(workdir)[-3:] == ("bill_evans", "satie", "unknown")
    assert main(["generate", "--checkpoint", str(workdir), "--list-composers"]) == 0
    assert "bill_evans, satie, unknown" in capsys.readouterr().out

    out = labelled_run / "samples"
    common = ["--instruments", "piano", "--seconds", "1", "--num-samples", "1", "--out", str(out)]
    assert main(["generate", "--checkpoint", str(workdir), "--composer", "Satie", *common]) == 0
    first = json.loads((out / "sample_0.json").read_text())["ids"][0]
    assert Vocabulary(saved.encoding).string(first) == "composer:satie"
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(workdir), "--composer", "debussy", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown composer 'debussy'" in err and "satie" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_fine_tuning_onto_a_corpus_with_one_more_label(labelled_run, tmp_path):
    data_dir = tmp_path / "tfds"
    midi = midi_folder(tmp_path / "midi", (*FOLDERS, "ravel"))
    assert prepare("midi_dir", str(data_dir), midi_dir=str(midi), workers=1).new_labels == [
        "bill_evans",
        "ravel",
        "satie",
    ]
    base_workdir = str(labelled_run / "run")
    cfg = midi_dir_config(
        data_dir,
        "encoding.composers=" + ",".join(Vocabulary().composers[:-1] + ("bill_evans", "ravel", "satie")),
    )
    base = load_run(base_workdir)
    base_params = nnx.to_pure_dict(nnx.state(base.model, nnx.Param))
    said = []
    initial = initial_params(base_workdir, cfg)
    new = fine_tune_params(initial, cfg.model, Vocabulary(cfg.encoding), say=said.append)
    assert said == [
        f"fine-tuning from step 3 of {base_workdir}; new composer labels start from `unknown`: ravel"
    ]
    old_vocab, new_vocab = base.tokenizer.vocab, Vocabulary(cfg.encoding)
    assert new_vocab.id("composer:satie") == old_vocab.id("composer:satie") + 1  # ravel comes before it
    for token, source in [
        ("composer:satie", "composer:satie"),
        ("composer:ravel", "composer:unknown"),
        ("piano:v3:C4", "piano:v3:C4"),
        ("wait:7", "wait:7"),
    ]:
        new_id, old_id = new_vocab.id(token), old_vocab.id(source)
        emb_new, emb_old = new["embed"]["token"]["embedding"], base_params["embed"]["token"]["embedding"]
        np.testing.assert_array_equal(np.asarray(emb_new[new_id]), np.asarray(emb_old[old_id]))
        np.testing.assert_array_equal(
            np.asarray(new["head"]["kernel"][:, new_id]), np.asarray(base_params["head"]["kernel"][:, old_id])
        )
    np.testing.assert_array_equal(
        np.asarray(new["final_norm"]["scale"]), np.asarray(base_params["final_norm"]["scale"])
    )

    said = []
    summary = train(cfg, tmp_path / "tuned", steps=1, init_params=initial, say=said.append)
    assert summary.final_step == 1 and any(line.startswith("fine-tuning from step 3") for line in said)
    assert run_composers(tmp_path / "tuned")[-4:] == ("bill_evans", "ravel", "satie", "unknown")
