"""Real MIDI that ships with installed packages, for tests: music21's test files, miditoolkit's
example, and a few music21 corpus scores exported to MIDI (each parsed and exported once per test process)."""

from __future__ import annotations

import pathlib

import miditoolkit
import music21

CORPUS_SCORES = (
    "bach/bwv66.6",
    "mozart/k80/movement1",
    "beethoven/opus18no1/movement1",
    "monteverdi/madrigal.3.1",
)


def packaged_midi_files() -> list[pathlib.Path]:
    music21_root = pathlib.Path(music21.__file__).parent
    files = sorted(music21_root.glob("midi/testPrimitive/*.mid"))
    files += sorted(pathlib.Path(miditoolkit.__file__).parent.rglob("*.mid"))
    return files


_EXPORTED: dict[str, bytes] = {}  # corpus name -> its MIDI file, as this process exported it


def export_corpus_scores(out_dir: pathlib.Path, names: tuple[str, ...] = CORPUS_SCORES) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out_dir / (name.replace("/", "_") + ".mid")
        if not path.exists():
            if name not in _EXPORTED:  # parsing a score and writing its MIDI takes seconds
                music21.corpus.parse(name).write("midi", fp=str(path))
                _EXPORTED[name] = path.read_bytes()
            path.write_bytes(_EXPORTED[name])
        paths.append(path)
    return paths


GM_DRUMS = (36, 42, 38, 42)  # kick, closed hi-hat, snare, closed hi-hat: a rock beat's cycle


def concatenate_in_time(
    paths: list[pathlib.Path], out_path: pathlib.Path, minutes: float, with_drums: bool = False
) -> pathlib.Path:
    """Real MIDI files played one after another (cycling through `paths`) until `minutes` are reached: a
    long piece with every source's tempo map and instruments. `with_drums` adds a drum-channel track playing
    the onsets of each source's first track on a GM kit, since no packaged MIDI file has drums."""
    tpq = 960
    out = miditoolkit.MidiFile(ticks_per_beat=tpq)
    out.tempo_changes = []
    tracks: dict[tuple[int, bool], miditoolkit.Instrument] = {}
    offset_tick, offset_s, n = 0, 0.0, 0
    while offset_s < minutes * 60:
        source = miditoolkit.MidiFile(str(paths[n % len(paths)]))
        n += 1
        scale = tpq / source.ticks_per_beat
        move = lambda tick, offset_tick=offset_tick, scale=scale: offset_tick + round(tick * scale)  # noqa: E731
        for tempo in source.tempo_changes or [miditoolkit.TempoChange(120.0, 0)]:
            out.tempo_changes.append(miditoolkit.TempoChange(tempo.tempo, move(tempo.time)))
        parts = [(inst.program, inst.is_drum, inst.notes) for inst in source.instruments]
        if with_drums and source.instruments:
            beat = [
                miditoolkit.Note(90 + 10 * (k % 2), GM_DRUMS[k % 4], note.start, note.start + 10)
                for k, note in enumerate(source.instruments[0].notes)
            ]
            parts.append((0, True, beat))
        for program, is_drum, notes in parts:
            track = tracks.setdefault((int(program), is_drum), miditoolkit.Instrument(int(program), is_drum))
            track.notes += [miditoolkit.Note(x.velocity, x.pitch, move(x.start), move(x.end)) for x in notes]
        source_end = max(source.max_tick, max((x.end for _, _, ns in parts for x in ns), default=0))
        offset_s += source.get_tick_to_time_mapping()[source_end]
        offset_tick = move(source_end) + tpq  # a beat of rest between pieces
    out.instruments = list(tracks.values())
    out.max_tick = max(x.end for track in out.instruments for x in track.notes)
    out.dump(str(out_path))
    return out_path


SLOWEST_TEMPO_US = 0xFFFFFF  # microseconds per beat, the most a MIDI tempo event can say (16.8 s)
LONGEST_DELTA = 0x0FFFFFFF  # ticks, the most one variable-length delta time can say


def hostile_gap_midi(path: pathlib.Path, gap_s: float = 4.5e9) -> pathlib.Path:
    """A tiny MIDI file (52 bytes) whose second note starts `gap_s` seconds (at most 4.5e9, to within one
    16.8 s tick) after the first ends: one tick per beat at the slowest tempo and a huge delta time, as a
    hostile upload would be made."""
    import mido  # miditoolkit's own parser; only this helper writes raw messages

    ticks = min(LONGEST_DELTA, round(gap_s / (SLOWEST_TEMPO_US / 1e6)))
    midi = mido.MidiFile(ticks_per_beat=1)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=SLOWEST_TEMPO_US, time=0))
    track.append(mido.Message("note_on", note=60, velocity=80, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=1))
    track.append(mido.Message("note_on", note=62, velocity=80, time=ticks))
    track.append(mido.Message("note_off", note=62, velocity=0, time=1))
    midi.tracks.append(track)
    midi.save(str(path))
    return path
