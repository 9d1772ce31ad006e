"""Splits that keep what belongs together on one side: a work's movements, and a tune's copies and near
copies (a chorale melody's harmonisations, a reel in two overlapping collections), so no test piece has its
twin in training.

Pieces are grouped (union-find) by their work (`work_of`: a folder of movements, a cantata's numbers, a
mass's sections) and by content: exactly equal notes, or melody lines sharing at least `NEAR_JACCARD` of
their interval `SHINGLE`-grams (transposition-invariant hashing of the line `encoding/melody.py` takes).
A group goes to the split its first member's work hashes to; every piece that leaves its own file's split
is reported with why.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from musenet_jax.encoding.melody import melody_line
from musenet_jax.encoding.tokenizer import Tokenizer

SHINGLE = 8  # intervals per shingle: 9 melody notes
NEAR_JACCARD = 0.5
COMMON_SHINGLE = 50  # a shingle in more pieces than this is a scale run, not a tune's fingerprint
MIN_SHINGLES = 8  # lines shorter than this many shingles are not compared (too little to call a copy)


def work_of(source_id: str) -> str:
    """The work a file (or a piece of an opus file, `path#n`) belongs to: a folder of movements
    (`beethoven/opus18no1/movement1.mxl` -> `beethoven/opus18no1`), a Bach cantata (`bach/bwv78.7.mxl` ->
    `bach/bwv78`), a Palestrina mass (`palestrina/Credo_45_a.krn` -> `palestrina/mass45`); else the file."""
    path = source_id.split("#")[0]
    parts = path.split("/")
    if len(parts) > 2 and re.fullmatch(r"movement\d+.*", parts[-1]):
        return "/".join(parts[:-1])
    stem = parts[-1].rsplit(".", 1)[0]
    if parts[0] == "bach" and (m := re.fullmatch(r"(bwv\d+)\.\d+.*", stem)):
        return f"bach/{m.group(1)}"
    if parts[0] == "palestrina" and (m := re.search(r"_(\d+)(?:_|$)", stem)):
        return f"palestrina/mass{m.group(1)}"
    return path


def shingles(line: np.ndarray, n: int = SHINGLE) -> set[int]:
    """Hashes of the melody line's interval n-grams."""
    steps = np.diff(np.asarray(line, np.int64))
    return {hash(tuple(steps[i : i + n].tolist())) for i in range(len(steps) - n + 1)}


class _Groups:
    def __init__(self, count: int):
        self.parent = list(range(count))
        self.why: dict[int, str] = {}

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int, why: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
            self.why.setdefault(b, why)
            self.why.setdefault(a, why)


def group_splits(
    sources: Sequence[str],
    ids: Sequence[np.ndarray],
    tokenizer: Tokenizer,
    split_of: Callable[[str], str],
) -> tuple[list[str], list[dict[str, str]]]:
    """(the split of each piece, the pieces moved from their own file's split: {"source", "from", "to",
    "why"}). `sources`: the pieces' ids (`path` or `path#n`); `split_of`: a work's split by hash."""
    groups = _Groups(len(sources))
    first_of_work: dict[str, int] = {}
    exact: dict[str, int] = {}
    lines: list[set[int]] = []
    for i, (source, piece) in enumerate(zip(sources, ids)):
        work = work_of(source)
        if work in first_of_work:
            groups.join(first_of_work[work], i, f"same work {work}")
        first_of_work.setdefault(work, i)
        body = np.asarray(piece[tokenizer.prefix_length(piece) :], np.int32)
        digest = hashlib.sha1(body.tobytes()).hexdigest()
        if digest in exact:
            groups.join(exact[digest], i, f"same notes as {sources[exact[digest]]}")
        exact.setdefault(digest, i)
        lines.append(shingles(melody_line(tokenizer.ids_to_events(piece))))
    _join_near_copies(groups, sources, lines)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(sources)):
        members[groups.find(i)].append(i)
    assigned = [""] * len(sources)
    moved = []
    for items in members.values():
        first = min(work_of(sources[i]) for i in items)
        split = split_of(first)
        for i in items:
            assigned[i] = split
            own = split_of(sources[i].split("#")[0])
            if own != split:
                why = groups.why.get(i, f"the split of its work {first}")
                moved.append({"source": sources[i], "from": own, "to": split, "why": why})
    return assigned, sorted(moved, key=lambda m: m["source"])


def _join_near_copies(groups: _Groups, sources: Sequence[str], lines: list[set[int]]) -> None:
    """Joins pieces whose melody lines share at least `NEAR_JACCARD` of their shingles."""
    holders: dict[int, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        if len(line) >= MIN_SHINGLES:
            for shingle in line:
                holders[shingle].append(i)
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for pieces in holders.values():
        if len(pieces) > COMMON_SHINGLE:
            continue
        for a_index, a in enumerate(pieces):
            for b in pieces[a_index + 1 :]:
                shared[(a, b)] += 1
    for (a, b), count in shared.items():
        union = len(lines[a]) + len(lines[b]) - count
        if count / union >= NEAR_JACCARD:
            groups.join(a, b, f"melody like {sources[a]}")
