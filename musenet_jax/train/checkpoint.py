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
import functools
import json
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from musenet_jax.config import Config, config_from_dict
from musenet_jax.errors import UserError

CHECKPOINT_SUBDIR = "checkpoints"
BEST_METRIC = "val_bits_per_token"  # lower is better
ARRAY_ITEMS: tuple[str, ...] = ("params", "train_state")


def checkpoint_dir(workdir: str | pathlib.Path) -> str:
    """`W/checkpoints` as Orbax wants it: absolute for local paths; bucket URLs (gs://) as given."""
    workdir = str(workdir)
    if "://" in workdir:
        return f"{workdir.rstrip('/')}/{CHECKPOINT_SUBDIR}"
    return str(pathlib.Path(workdir).resolve() / CHECKPOINT_SUBDIR)


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
            f"(fingerprint {meta.vocab_fingerprint[:12]}..., this encoding config gives {fingerprint[:12]}...); "
            "use the encoding config saved in its config.json or a new --workdir"
        )


# Orbax warnings that are expected here, not news: most saves carry no validation metrics, and
# inference opens checkpoints read-only on purpose.
_EXPECTED_ORBAX_WARNINGS: tuple[str, ...] = ("did not provide metrics", "read only", "read_only=True")


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
            args.iterator.set_state(record["bytes"].encode("latin-1") if "bytes" in record else record["json"])
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

    def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
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
        iterator_save, _ = _iterator_args()
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            train_state=ocp.args.StandardSave(train_state),
            data=iterator_save(data_iterator),
            meta=ocp.args.JsonSave(dataclasses.asdict(meta)),
        )
        usable = dict(metrics) if metrics and BEST_METRIC in metrics else None
        return self._manager.save(step, args=args, metrics=usable, force=force)

    def read_meta(self, step: int) -> CheckpointMeta:
        raw = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return CheckpointMeta(**raw)

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
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return {name: restored[name] for name in ARRAY_ITEMS if name in items}

    def wait(self) -> None:
        """Blocks until the background writes of the last save are on disk."""
        self._manager.wait_until_finished()

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
        raise UserError(f"no checkpoint in {directory}; train first with `musenet-jax train --workdir {workdir}`")
    return chosen
