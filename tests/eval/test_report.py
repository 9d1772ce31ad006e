"""eval/report.py: the human-readable table of an evaluation report, including a report without samples."""

from musenet_jax.eval.report import format_table


def _report(**changes):
    report = {
        "split": "validation",
        "pieces": 3,
        "tokens": 1234,
        "bits_per_token": 2.345678,
        "bits_per_token_by_kind": {"note_on": 3.1, "wait": 1.25, "note_off": None},
        "tokens_by_kind": {"note_on": 600, "wait": 500, "note_off": 134},
        "test_stats": {"notes_per_second": {"mean": 4.0, "std": 1.5}, "pitch_range": {"mean": None}},
        "sample_stats": {"notes_per_second": {"mean": 3.0, "std": 0.5}},
        "stat_distance": {"notes_per_second": 0.6667},
    }
    report.update(changes)
    return report


def test_header_names_the_split_and_totals():
    lines = format_table(_report()).splitlines()
    assert lines[0] == "validation: 3 pieces, 1234 tokens, 2.3457 bits/token"
    assert "validation" in lines[2] and "samples" in lines[2] and "distance" in lines[2]


def test_kinds_without_a_value_are_left_out():
    by_kind = format_table(_report()).splitlines()[1]
    assert "note_on 3.100 (600)" in by_kind and "wait 1.250 (500)" in by_kind
    assert "note_off" not in by_kind


def test_statistic_rows_show_mean_std_and_distance():
    rows = {line.split()[0]: line for line in format_table(_report()).splitlines()[3:]}
    assert "3.000±0.500" in rows["notes_per_second"] and "4.000±1.500" in rows["notes_per_second"]
    assert rows["notes_per_second"].rstrip().endswith("0.667")
    assert rows["pitch_range"].split()[1:] == ["-", "-"]


def test_no_samples():
    text = format_table(_report(sample_stats=None, stat_distance=None, split="test"))
    rows = text.splitlines()
    assert rows[0].startswith("test:")
    assert rows[3].split()[1:] == ["-", "4.000±1.500"]


def test_the_gate_table_shows_each_set_and_what_it_fails():
    reference = {"recurring_pitch_6": {"mean": 0.42, "std": 0.3, "n": 10}, "key_return": {"mean": None}}
    samples = {
        "distance": {"recurring_pitch_6": 2.06, "key_return": None},
        "fails": ["recurring_pitch_6", "folk:recurring_pitch_6"],
        "by_composer": {"folk": {"distance": {"recurring_pitch_6": 2.06, "key_return": None}}},
    }
    controls = {"random_walk": {"distance": {"recurring_pitch_6": 1.99, "key_return": 0.1}, "fails": []}}
    table = format_table(_report(gate={"reference": reference, "samples": samples, "controls": controls}))
    header, row, empty = (
        line for line in table.splitlines() if "gate" in line or line.startswith(("recurring", "key_return"))
    )
    assert "samples" in header and "s:folk" in header and "walk" in header
    assert row.split() == ["recurring_pitch_6", "0.420", "2.06", "2.06", "1.99"]
    assert empty.split() == ["key_return", "-", "-", "-", "0.10"]
    assert "samples fails 2: recurring_pitch_6, folk:recurring_pitch_6" in table
    assert "random_walk fails 0: none" in table


def test_a_split_without_spread_marks_its_raw_distances():
    one_piece = _report(
        pieces=1,
        test_stats={"notes_per_second": {"mean": 4.0, "std": 0.0}, "pitch_range": {"mean": 30.0, "std": 2.0}},
        sample_stats={
            "notes_per_second": {"mean": 3.0, "std": 0.5},
            "pitch_range": {"mean": 31.0, "std": 1.0},
        },
        stat_distance={"notes_per_second": 1.0, "pitch_range": 0.5},
    )
    lines = format_table(one_piece).splitlines()
    rows = {line.split()[0]: line for line in lines[3:]}
    assert rows["notes_per_second"].rstrip().endswith("1.000*")
    assert rows["pitch_range"].rstrip().endswith("0.500")
    assert lines[-1].startswith("* raw distance in the statistic's own units") and "(1 piece(s))" in lines[-1]
    assert not format_table(_report()).splitlines()[-1].startswith("*")
