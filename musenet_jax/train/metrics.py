"""Where training figures go: `W/metrics.jsonl` (one JSON object per logged step), TensorBoard
event files in `W/tb`, and a progress bar on a terminal showing the same numbers.

Every record carries `elapsed_s`, the run's wall-clock seconds so far (validation and checkpoints
included, summed over resumed sessions), so recipes can be compared at equal time, not equal steps.

Only process 0 writes; the others keep a silent logger so the loop needs no `if` around logging.
On resume the JSONL file is cut back to the restored step and TensorBoard purges the later events,
so a preempted and resumed run leaves one clean curve. In a bucket (gs://), where an object cannot be
appended to, the JSONL file is rewritten whole at each record (kilobytes per thousand records).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from etils import epath
from tensorboardX import SummaryWriter
from tqdm import tqdm

from musenet_jax.errors import UserError
from musenet_jax.storage import is_url

# The figures shown on the progress bar, in this order, with their formats.
PROGRESS_FIELDS: tuple[tuple[str, str], ...] = (
    ("loss", ".4f"),
    ("val_bits_per_token", ".4f"),
    ("learning_rate", ".2e"),
    ("grad_norm", ".3f"),
    ("tokens_per_s", ".0f"),
    ("mfu", ".1%"),
    ("skipped_steps", "d"),
)


def _jsonable(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; "nan" keeps the line parseable by any reader
    return value


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_metrics(path: str | os.PathLike, say: Callable[[str], None] = _warn) -> list[dict[str, Any]]:
    """The logged records of a `metrics.jsonl`, in file order. A torn last line (a write cut short by a
    full disk or a kill) is said in one line and left out; a damaged line before it is a `UserError`."""
    path = epath.Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(
                    f"{path} line {number} is not a JSON record ({line[:40]!r}...): the file was altered; "
                    "delete that line"
                ) from None
            say(
                f"warning: {path} ends in a torn line (a write cut short: full disk or a kill); "
                f"ignored it, the {len(records)} records before it are kept"
            )
    return records


class MetricsLogger:
    """JSONL + TensorBoard + progress bar for one run (process 0 only when `enabled`)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        start_step: int,
        total_steps: int,
        enabled: bool,
        progress: bool | None = None,
    ) -> None:
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        workdir = epath.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "metrics.jsonl"
        # rewritten from the records kept: a torn last line does not stay glued to the next record
        kept = [r for r in read_metrics(path) if int(r.get("step", 0)) <= start_step]
        earlier_s = max((float(r.get("elapsed_s", 0.0)) for r in kept), default=0.0)
        self._clock_start = time.monotonic() - earlier_s
        self._path = path
        self._lines = [json.dumps(r) + "\n" for r in kept]  # kept whole only where appends are impossible
        try:
            path.write_text("".join(self._lines))
        except OSError as err:  # a file object's write error names no file: say which one
            raise OSError(err.errno, err.strerror, str(path)) from err
        if not is_url(path):
            self._jsonl = open(path, "a", buffering=1)
        self._tb = SummaryWriter(str(workdir / "tb"), purge_step=start_step + 1 if start_step else None)
        show = sys.stderr.isatty() if progress is None else progress
        if show:
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self._shown: dict[str, Any] = {}

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Writes one record (scalars only) for `step` to every sink."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        record["elapsed_s"] = round(time.monotonic() - self._clock_start, 3)
        assert self._tb is not None
        line = json.dumps(record) + "\n"
        try:
            if self._jsonl is not None:
                self._jsonl.write(line)
            else:
                self._lines.append(line)
                self._path.write_text("".join(self._lines))
        except OSError as err:  # a file object's write error names no file: say which one
            raise OSError(err.errno, err.strerror, str(self._path)) from err
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(
                    f"train/{key}" if not key.startswith("val_") else f"val/{key}", value, step
                )
        if self._bar is not None:
            self._shown.update(record)
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def _postfix(self) -> str:
        parts = []
        for key, fmt in PROGRESS_FIELDS:
            value = self._shown.get(key)
            if isinstance(value, (int, float)):
                parts.append(f"{key}={format(value, fmt)}")
        return " ".join(parts)

    def advance(self, step: int) -> None:
        """Moves the progress bar to `step` (called every step, logging or not)."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def write(self, message: str) -> None:
        """A line for the user that does not tear the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
