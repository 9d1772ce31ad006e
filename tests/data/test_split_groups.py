"""data/split_groups.py: a work's movements, exact copies and transposed near copies of a tune land in one
split, unrelated pieces keep their own, and every move is reported with why."""

from __future__ import annotations

import pathlib

from midi_corpus import export_corpus_scores

from musenet_jax.data.split_groups import group_splits, work_of
from musenet_jax.encoding.tokenizer import Tokenizer


def test_works_group_movements_cantatas_and_masses():
    assert work_of("beethoven/opus18no1/movement1.mxl") == work_of("beethoven/opus18no1/movement4.krn")
    assert work_of("bach/bwv78.7.mxl") == work_of("bach/bwv78.2.mxl") == "bach/bwv78"
    assert work_of("palestrina/Credo_45_a.krn") == work_of("palestrina/Agnus_I_45.krn") == "palestrina/mass45"
    assert work_of("ryansMammoth/JollyTinkersReel.abc#3") == "ryansMammoth/JollyTinkersReel.abc"
    assert work_of("bach/bwv66.6.mxl") != work_of("bach/bwv67.6.mxl")


def test_copies_and_transposed_copies_share_a_split(tmp_path: pathlib.Path):
    tokenizer = Tokenizer()
    chorale_path, madrigal_path = export_corpus_scores(tmp_path, ("bach/bwv66.6", "monteverdi/madrigal.3.1"))
    chorale = tokenizer.midi_to_events(chorale_path)
    madrigal = tokenizer.midi_to_events(madrigal_path)
    pieces = {
        "a/chorale.mxl": chorale,
        "b/same_chorale.mxl": chorale,  # an exact duplicate in another collection
        "b/chorale_up_a_tone.mxl": chorale.replace(pitch=chorale.pitch + 2),  # a near copy
        "b/madrigal.mxl": madrigal,  # unrelated
    }
    sources = list(pieces)
    ids = [tokenizer.events_to_ids(e, "bach") for e in pieces.values()]

    def by_folder(work: str) -> str:
        return "test" if work.startswith("a/") else "train"

    splits, moved = group_splits(sources, ids, tokenizer, by_folder)
    assert splits == ["test", "test", "test", "train"]
    assert [m["source"] for m in moved] == ["b/chorale_up_a_tone.mxl", "b/same_chorale.mxl"]
    assert all(m["from"] == "train" and m["to"] == "test" and m["why"] for m in moved)
    whys = {m["source"]: m["why"] for m in moved}
    assert "same notes" in whys["b/same_chorale.mxl"] and "melody like" in whys["b/chorale_up_a_tone.mxl"]
    alone, none_moved = group_splits(sources[3:], ids[3:], tokenizer, by_folder)
    assert alone == ["train"] and none_moved == []
