"""Rendering tokens and notes for people: piano-roll PNGs and WAV audio (FluidSynth). No sampling here."""
