"""A parsed music21 score's notes as MIDI, for the scores music21 cannot export itself.

music21's MIDI export expands repeats and re-makes notation first; on about 4% of the embedded corpus's
scores (folk tunes with repeat marks it calls badly formed, parts where it files a time signature twice) that
raises, and the piece used to be skipped. The notes are all there in the parsed score, though: this reads
them part by part (ties joined) and writes them at the score's first tempo mark, as written: the repeats
are not expanded, and grace notes (no written length) are left out.
"""

from __future__ import annotations

import miditoolkit

TICKS_PER_BEAT = 480
DEFAULT_QPM = 120.0
DEFAULT_VELOCITY = 80
PERCUSSION_CHANNEL = 9


def notes_to_midi(piece) -> miditoolkit.MidiFile:
    """Every note of `piece` (a music21 Score or Part), one MIDI track per part, at its first tempo."""
    from music21 import instrument, tempo

    midi = miditoolkit.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    marks = list(piece.recurse().getElementsByClass(tempo.MetronomeMark))
    qpm = next((m.getQuarterBPM() for m in marks if m.getQuarterBPM()), None) or DEFAULT_QPM
    midi.tempo_changes = [miditoolkit.TempoChange(float(qpm), 0)]
    parts = list(piece.parts) if hasattr(piece, "parts") and len(piece.parts) else [piece]
    for part in parts:
        found = part.getInstrument(returnDefault=True)
        program = found.midiProgram if found.midiProgram is not None else 0
        drums = isinstance(found, instrument.UnpitchedPercussion) or found.midiChannel == PERCUSSION_CHANNEL
        track = miditoolkit.Instrument(program=program, is_drum=drums, name=part.partName or "")
        for element in part.stripTies().flatten().notes:
            start = round(float(element.offset) * TICKS_PER_BEAT)
            end = round(float(element.offset + element.quarterLength) * TICKS_PER_BEAT)
            if end <= start:  # grace notes: no written length
                continue
            velocity = element.volume.velocity or DEFAULT_VELOCITY
            for pitch in getattr(element, "pitches", ()):  # unpitched percussion has none
                track.notes.append(miditoolkit.Note(int(velocity), int(pitch.midi), start, end))
        if track.notes:
            midi.instruments.append(track)
    # miditoolkit maps ticks to seconds only up to max_tick, which it sets when it reads a file, not here
    midi.max_tick = max((n.end for track in midi.instruments for n in track.notes), default=0) + 1
    return midi
