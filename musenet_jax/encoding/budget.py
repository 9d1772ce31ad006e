"""What one MIDI file may ask of the machine: limits checked before anything is sized from its content.

A 52-byte MIDI file can place its second note 4.5e9 seconds after the first (the slowest tempo times the
longest delta time); its token sequence would then hold 3.5e9 `wait` tokens (26 GiB). Every path that reads
MIDI (encode, prepare, generate's prompt, the co-composer's uploads, critic scoring) goes through
`Tokenizer.read_notes`, which refuses a file over one of these limits with its reason, so that the file is
skipped (encode, prepare, critic score) or refused (a prompt, an upload) and nothing is cut silently. The
limits lie far beyond real music (the longest MAESTRO performance is under an hour; a piece with ten minutes
of silence in it is broken) and bound a piece's tokens to a few million.
"""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.events import Events

MAX_FILE_BYTES = 64 * 2**20  # checked before the file is read: bounds the notes a parser can make
MAX_NOTES = 1_000_000
MAX_DURATION_S = 4 * 3600.0
MAX_SILENCE_S = 600.0  # a stretch with no note sounding, the opening silence included


def over_budget(events: Events) -> tuple[str, str] | None:
    """(reason code, what is wrong in words) for notes over a limit; None for notes within all of them.

    Uses only the notes' columns, so it runs before any array is sized from their times."""
    if len(events) > MAX_NOTES:
        return "too_many_notes", f"{len(events):,} notes, over the limit of {MAX_NOTES:,} for one file"
    if not len(events):
        return None
    order = np.argsort(events.start_s, kind="stable")
    starts = events.start_s[order]
    sounding_until = np.maximum.accumulate(np.concatenate([[0.0], events.end_s[order][:-1]]))
    silences = starts - sounding_until
    longest = int(np.argmax(silences))
    if silences[longest] > MAX_SILENCE_S:
        return "long_silence", (
            f"{silences[longest]:.3g} s of silence before the note at {starts[longest]:.3g} s, over the "
            f"limit of {MAX_SILENCE_S:g} s for one file"
        )
    duration = float(events.end_s.max())
    if duration > MAX_DURATION_S:
        return "too_long", f"lasts {duration:.3g} s, over the limit of {MAX_DURATION_S:g} s for one file"
    return None
