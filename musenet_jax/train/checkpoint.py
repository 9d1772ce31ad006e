"""Orbax checkpoints of a run in `W/checkpoints/<step>/`: everything needed to go on exactly.

One checkpoint holds, as separate Orbax items written together (asynchronously for the arrays):
- `params`: the model parameters (the only item inference needs),
- `train_state`: optimizer state, step, RNG key and counters,
- `data`: the data iterator's `get_state()`, one JSON file per process (each host reads its own shard),
- `meta`: step, vocabulary fingerprint, vocabulary size and the resolved config as JSON.
Kept: the latest `train.keep_checkpoints` plus the best by validation bits per token. Orbax writes a
step into a temporary directory and renames it when complete, so a crash in the middle of a save
leaves the previous checkpoints untouched and restorable.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import os
import pathlib
import shutil
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from musenet_jax.config import Config, config_from_dict
from musenet_jax.errors import UserError
from musenet_jax.storage import as_path, is_url, move_folder

CHECKPOINT_SUBDIR = "checkpoints"
MANIFEST_SUBDIR = "checkpoint_manifests"  # W/checkpoint_manifests/<step>.json: size and CRC32 per file
BEST_METRIC = "val_bits_per_token"  # lower is better
ARRAY_ITEMS: tuple[str, ...] = ("params", "train_state")


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    """`W/checkpoints` as Orbax wants it: absolute for local paths; bucket URLs (gs://) as given."""
    return str(as_path(workdir) / CHECKPOINT_SUBDIR)


def has_checkpoints(workdir: str | os.PathLike) -> bool:
    """Whether `workdir` holds saved steps (a train there resumes), seen without opening Orbax."""
    folder = epath.Path(checkpoint_dir(workdir))
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """The JSON part of a checkpoint: what the arrays mean and where they came from."""

    step: int
    vocab_fingerprint: str
    vocab_size: int
    config: dict[str, Any]

    def resolved_config(self) -> Config:
        return config_from_dict(self.config, name=self.config.get("name", "custom"))


def check_fingerprint(meta: CheckpointMeta, fingerprint: str, where: str) -> None:
    """A checkpoint only makes sense with the vocabulary it was trained on."""
    if meta.vocab_fingerprint != fingerprint:
        raise UserError(
            f"checkpoint step {meta.step} in {where} was trained with a different vocabulary "
            f"(fingerprint {meta.vocab_fingerprint[:12]}..., this encoding config gives "
            f"{fingerprint[:12]}...); "
            "use the encoding config saved in its config.json or a new --workdir"
        )


# Orbax warnings that are expected here, not news: most saves carry no validation metrics, and
# inference opens checkpoints read-only on purpose.
_EXPECTED_ORBAX_WARNINGS: tuple[str, ...] = ("did not provide metrics", "read only", "read_only=True")


class DamagedCheckpoint(Exception):
    """A saved step that cannot be read back (truncated or altered files, missing folders)."""

    def __init__(self, step: int, directory: str, cause: BaseException | str):
        if isinstance(cause, str):
            self.reason = cause
        else:
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            self.reason = f"{type(cause).__name__}: {first[:160]}"
        self.step = step
        super().__init__(f"checkpoint step {step} in {directory} is damaged ({self.reason})")


def _crc32(path: pathlib.Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def step_manifest(step_dir: pathlib.Path) -> dict[str, list[int]]:
    """Relative path -> [size, CRC32] of every file of a finished step."""
    return {
        str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)]
        for p in sorted(step_dir.rglob("*"))
        if p.is_file()
    }


def verify_step(workdir_checkpoints: str, step: int) -> None:
    """Compares a step's files with the manifest written when it was saved (a missing, truncated or
    altered file -> `DamagedCheckpoint`), so damage is found before Orbax reads half of it. Steps saved
    without a manifest (older runs, bucket paths) are only checked by Orbax itself."""
    if is_url(workdir_checkpoints):
        return
    root = pathlib.Path(workdir_checkpoints)
    manifest_path = root.parent / MANIFEST_SUBDIR / f"{step}.json"
    if not manifest_path.exists():
        return
    step_dir = root / str(step)
    try:
        expected = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return  # a damaged manifest proves nothing about the step; Orbax will tell
    for name, (size, crc) in expected.items():
        path = step_dir / name
        if not path.is_file():
            problem = f"{name} is missing"
        elif path.stat().st_size != size:
            problem = f"{name} has {path.stat().st_size} bytes, {size} were saved"
        elif _crc32(path) != crc:
            problem = f"{name} differs from what was saved (checksum)"
        else:
            continue
        raise DamagedCheckpoint(step, workdir_checkpoints, problem)


class _QuietUnvalidatedSaves(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _EXPECTED_ORBAX_WARNINGS)


@functools.cache
def _iterator_args() -> tuple[type, type]:
    """Orbax save/restore arguments for a data iterator, registered once with their handler.

    Like grain's own handler (one JSON file per process) but for any object with `get_state()` /
    `set_state()` returning JSON-able data or bytes, so wrapped or custom iterators checkpoint too.
    """

    def state_file(directory: Any) -> Any:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    class IteratorStateHandler(ocp.CheckpointHandler):
        def save(self, directory: Any, args: Any) -> None:
            state = args.iterator.get_state()
            if isinstance(state, bytes):
                record = {"bytes": state.decode("latin-1")}
            else:
                record = {"json": state}
            state_file(directory).write_text(json.dumps(record))

        def restore(self, directory: Any, args: Any) -> Any:
            path = state_file(directory)
            if not path.exists():
                raise UserError(
                    f"{path} is missing: the checkpoint was written by a run with a different number of "
                    "processes; resume with the same process count"
                )
            record = json.loads(path.read_text())
            args.iterator.set_state(
                record["bytes"].encode("latin-1") if "bytes" in record else record["json"]
            )
            return args.iterator

        def metadata(self, directory: Any) -> None:
            return None

    @ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
    @dataclasses.dataclass
    class IteratorSave(ocp.args.CheckpointArgs):
        iterator: Any

    @ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
    @dataclasses.dataclass
    class IteratorRestore(ocp.args.CheckpointArgs):
        iterator: Any

    return IteratorSave, IteratorRestore


class RunCheckpoints:
    """The checkpoints of one work directory: save every K steps, restore the latest or the best."""

    def __init__(
        self, workdir: str | pathlib.Path, *, keep: int = 3, async_save: bool = True, read_only: bool = False
    ):
        self.directory = checkpoint_dir(workdir)
        preservation = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep),
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                    reverse=True,  # sorted high to low, the last n (the lowest) are kept
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        absl_logger = logging.getLogger("absl")  # before the options: they warn when read-only
        if not any(isinstance(f, _QuietUnvalidatedSaves) for f in absl_logger.filters):
            absl_logger.addFilter(_QuietUnvalidatedSaves())
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else preservation,
            best_fn=lambda metrics: metrics[BEST_METRIC],
            best_mode="min",
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
            create=not read_only,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._unlisted: list[int] = []  # saved steps whose manifest is not written yet
        self._read_only = read_only
        self._verified: set[int] = set()

    def verify(self, step: int) -> None:
        """`verify_step` once per step and manager."""
        if step not in self._verified:
            verify_step(self.directory, step)
            self._verified.add(step)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the lowest validation bits per token (the latest when none was validated)."""
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(
        self,
        step: int,
        *,
        params: Any,
        train_state: Any,
        data_iterator: Any,
        meta: CheckpointMeta,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Starts saving `step` (arrays are written in the background); True if a save was started.

        `metrics` with `val_bits_per_token` make the step a candidate for "best".
        """
        self.wait()  # the previous save is complete: its manifest can be written
        self._check_space(params, train_state)
        iterator_save, _ = _iterator_args()
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            train_state=ocp.args.StandardSave(train_state),
            data=iterator_save(data_iterator),
            meta=ocp.args.JsonSave(dataclasses.asdict(meta)),
        )
        usable = dict(metrics) if metrics and BEST_METRIC in metrics else None
        started = self._manager.save(step, args=args, metrics=usable, force=force)
        if started:
            self._unlisted.append(step)
        return started

    def read_meta(self, step: int) -> CheckpointMeta:
        """The step's JSON part; `DamagedCheckpoint` when it cannot be read."""
        self.verify(step)
        try:
            raw = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            return CheckpointMeta(**raw)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as err:  # Orbax and TensorStore raise many types for unreadable files
            raise DamagedCheckpoint(step, self.directory, err) from err

    def restore(
        self,
        step: int,
        *,
        abstract_params: Any,
        abstract_train_state: Any | None = None,
        data_iterator: Any | None = None,
    ) -> dict[str, Any]:
        """Restores the requested items of `step` onto the shardings of the abstract trees.

        Returns a dict with `params` and, when asked for, `train_state`; the data iterator, when given,
        is moved to the saved position in place.
        """
        _, iterator_restore = _iterator_args()
        items: dict[str, Any] = {"params": ocp.args.StandardRestore(abstract_params)}
        if abstract_train_state is not None:
            items["train_state"] = ocp.args.StandardRestore(abstract_train_state)
        if data_iterator is not None:
            items["data"] = iterator_restore(data_iterator)
        self.verify(step)
        step_dir = epath.Path(self.directory) / str(step)
        missing = [name for name in items if not (step_dir / name).is_dir()]
        if missing:
            raise DamagedCheckpoint(step, self.directory, f"no {', '.join(missing)} folder")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as err:  # Orbax and TensorStore raise many types for unreadable files
            raise DamagedCheckpoint(step, self.directory, err) from err
        return {name: restored[name] for name in ARRAY_ITEMS if name in items}

    def wait(self) -> None:
        """Blocks until the background writes of the last save are on disk, then records its manifest.
        A background write that ran out of space becomes an `OSError` naming the checkpoint folder."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            if "No space left on device" in str(err) or getattr(err, "errno", None) == errno.ENOSPC:
                raise OSError(
                    errno.ENOSPC,
                    "No space left on device while saving a checkpoint; earlier checkpoints are intact",
                    self.directory,
                ) from err
            raise
        self._write_manifests()

    def _check_space(self, *trees: Any) -> None:
        """Refuses a save that cannot fit before Orbax starts writing it: a disk filling up mid-save
        fails in background threads with pages of logs, while this is one line and nothing written."""
        if is_url(self.directory) or not pathlib.Path(self.directory).is_dir():
            return
        need = sum(int(getattr(leaf, "nbytes", 0)) for tree in trees for leaf in jax.tree.leaves(tree))
        free = shutil.disk_usage(self.directory).free
        if free < need:  # uncompressed array bytes: a safe upper bound of what Orbax writes
            raise OSError(
                errno.ENOSPC,
                f"No space left on device: {free / 2**20:.1f} MiB free, a checkpoint "
                f"needs up to {need / 2**20:.1f} MiB; earlier checkpoints are intact",
                self.directory,
            )

    def _write_manifests(self) -> None:
        """Process 0 writes `W/checkpoint_manifests/<step>.json` for finished steps and drops the manifests
        of steps the keep-N policy deleted."""
        steps, self._unlisted = self._unlisted, []
        if self._read_only or jax.process_index() != 0 or is_url(self.directory):
            return
        root = pathlib.Path(self.directory)
        folder = root.parent / MANIFEST_SUBDIR
        folder.mkdir(exist_ok=True)
        for step in steps:
            if (root / str(step)).is_dir():
                temporary = folder / f"{step}.json.tmp"
                temporary.write_text(json.dumps(step_manifest(root / str(step))))
                temporary.replace(folder / f"{step}.json")
        kept = {str(s) for s in self._manager.all_steps()}
        for path in folder.glob("*.json"):
            if path.stem not in kept:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._manager.close()


def choose_step(checkpoints: RunCheckpoints, step: int | str, workdir: str | pathlib.Path) -> int:
    """A step number from "latest", "best" (lowest validation bits per token) or a saved step number."""
    directory = checkpoints.directory
    if step == "latest":
        chosen = checkpoints.latest_step()
    elif step == "best":
        chosen = checkpoints.best_step()
    elif isinstance(step, int) or str(step).isdigit():
        chosen = int(step)
        if chosen not in checkpoints.all_steps():
            steps = ", ".join(map(str, checkpoints.all_steps())) or "none"
            raise UserError(f"no checkpoint for step {chosen} in {directory}; saved steps: {steps}")
    else:
        raise UserError(f"bad checkpoint step {step!r}; valid: latest, best or a step number")
    if chosen is None:
        raise UserError(
            f"no checkpoint in {directory}; train first with `musenet-jax train --workdir {workdir}`"
        )
    return chosen


def restore_first_readable(
    checkpoints: RunCheckpoints,
    steps: list[int],
    load: Callable[[int], Any],
    say: Callable[[str], None] = print,
) -> tuple[int, Any, list[int]]:
    """`load(step)` for the first of `steps` that reads back; each damaged one is said in one line.

    Returns (step, what `load` returned, the damaged steps). Raises `UserError` when none reads.
    """
    damaged: list[int] = []
    reason: DamagedCheckpoint | None = None
    for n, step in enumerate(steps):
        try:
            return step, load(step), damaged
        except DamagedCheckpoint as err:
            damaged.append(step)
            if len(steps) == 1:  # the one step asked for: said below, with the readable ones
                reason = err
                continue
            after = (
                f"falling back to step {steps[n + 1]}"
                if n + 1 < len(steps)
                else "no older step to fall back to"
            )
            say(f"warning: {err}; {after}")
    readable = _passing_checks(checkpoints, [s for s in checkpoints.all_steps() if s not in damaged])
    if len(steps) == 1:
        others = (
            f"steps that pass their checks: {', '.join(map(str, readable))} (give --step {readable[-1]}, "
            "or leave --step out for the latest readable one)"
            if readable
            else "no other step passes its checks; train from scratch in a new --workdir"
        )
        raise UserError(f"{reason}; {others}")
    raise UserError(
        f"no readable checkpoint in {checkpoints.directory} (damaged: {', '.join(map(str, damaged))}); "
        "delete the damaged step folders or train from scratch in a new --workdir"
    )


def _passing_checks(checkpoints: RunCheckpoints, steps: list[int]) -> list[int]:
    """The `steps` whose files match their manifests (cheap: no arrays are restored), ascending."""
    passing = []
    for step in sorted(steps):
        try:
            checkpoints.verify(step)
        except DamagedCheckpoint:
            continue
        passing.append(step)
    return passing


def set_aside(workdir: str | os.PathLike, steps: list[int], why: str) -> epath.Path | None:
    """Moves step folders out of `W/checkpoints` into `W/set_aside/<why>-<step>` so that new saves of those
    step numbers can be written and nothing is deleted; returns the folder (None when nothing moved)."""
    source = epath.Path(checkpoint_dir(workdir))
    target = as_path(workdir) / "set_aside"
    moved = False
    for step in steps:
        folder = source / str(step)
        if folder.exists():
            destination = target / f"{why}-{step}"
            n = 1
            while destination.exists():
                destination, n = target / f"{why}-{step}.{n}", n + 1
            move_folder(folder, destination)
            moved = True
    return target if moved else None
