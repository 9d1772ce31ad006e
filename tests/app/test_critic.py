"""app/critic.py's score_files on a real Run (the tiny model, a critic head saved with Orbax in tmp_path).

Scoring promises: an unreadable file is said in one line and skipped while the rest are scored; no trained
critic, or no readable file, is one UserError."""

import shutil

import pytest
from flax import nnx
from midi_corpus import packaged_midi_files

from musenet_jax.app.critic import CriticReport, score_files
from musenet_jax.app.run import Run
from musenet_jax.config import load_config
from musenet_jax.critic.store import CriticMeta, save_critic
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.model.transformer import build_model

CFG = load_config("tiny", ["model.d_model=32", "model.context=64"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    tokenizer = Tokenizer(CFG.encoding)
    model = build_model(CFG.model, tokenizer.vocab, seed=0)
    head = {"critic": nnx.to_pure_dict(nnx.state(model, nnx.Param))["critic"]}
    save_critic(workdir, head, CriticMeta(False, 1, 0.5, 1, 1, 0, tokenizer.vocab.fingerprint()))
    return Run(str(workdir), 0, CFG, model, tokenizer, note_facts=None)


def test_unreadable_file_is_said_and_skipped(run, tmp_path):
    good = [shutil.copy(p, tmp_path / p.name) for p in packaged_midi_files()[:2]]
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(packaged_midi_files()[0].read_bytes()[:40])
    said = []
    scores = score_files(run, [good[0], str(corrupt), good[1]], say=said.append)
    assert [path for path, _ in scores] == [good[0], good[1]]
    assert all(0.0 <= p <= 1.0 for _, p in scores)
    assert len(said) == 1 and "\n" not in said[0] and said[0].startswith(f"skipped {corrupt}")


def test_nothing_readable_is_one_error(run, tmp_path):
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="none of the files could be read"):
        score_files(run, [str(empty)], say=lambda _: None)


def test_no_trained_critic_is_one_error(run, tmp_path):
    bare = Run(str(tmp_path), 0, run.cfg, run.model, run.tokenizer, note_facts=None)
    with pytest.raises(UserError, match="no trained critic .* critic train"):
        score_files(bare, [str(packaged_midi_files()[0])])


def test_report_warns_when_few_pieces_are_held_out():
    few = CriticReport(0.75, 0.5, 10, 2, 3, False, "/w/critic").describe()
    assert (
        "critic head (trunk frozen)" in few and "0.750" in few and few.count("\n") == 1 and "warning" in few
    )
    many = CriticReport(0.75, 0.5, 10, 8, 8, True, "/w/critic").describe()
    assert "head and trunk" in many and "\n" not in many
