"""The training loop: one program per host, a mesh over all devices, resume from the latest checkpoint.

`train(cfg, workdir)` builds the mesh, restores or initializes the sharded train state,
feeds each host's shard of the data into globally sharded batches, and runs the jitted train step.
Around it: validation in bits per token, tokens/s and MFU, metrics to JSONL / TensorBoard / a progress
bar, Orbax checkpoints (async), SIGTERM/SIGINT -> checkpoint and return, and a stop after too many
non-finite losses in a row. Step metrics are read one step late so the host prepares the next batch
while the devices still work on the current one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from musenet_jax.config import Config
from musenet_jax.data.labels import with_dataset_labels
from musenet_jax.data.note_facts import load_note_facts, save_note_facts, split_note_facts
from musenet_jax.data.pipeline import make_eval_iterator, make_train_iterator
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.hardware import total_peak_flops
from musenet_jax.model.info import flops_per_token
from musenet_jax.model.sharding import make_mesh
from musenet_jax.storage import is_url
from musenet_jax.train.checkpoint import (
    CheckpointMeta,
    RunCheckpoints,
    check_fingerprint,
    checkpoint_dir,
    choose_step,
    restore_first_readable,
    set_aside,
)
from musenet_jax.train.init_from import InitialParams, fine_tune_params
from musenet_jax.train.lock import WorkdirLock
from musenet_jax.train.metrics import MetricsLogger
from musenet_jax.train.preemption import NonFiniteGuard, StopRequest
from musenet_jax.train.setup import TrainState, make_train_setup
from musenet_jax.train.step import make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What a call to `train` did, for the CLI and for tests."""

    workdir: str
    start_step: int
    final_step: int
    final_loss: float | None
    val_bits_per_token: float | None
    tokens_per_s: float | None
    mfu: float | None
    skipped_steps: int
    preempted_by: str | None  # signal name when stopped by SIGTERM/SIGINT
    target_step: int | None = None  # the step it was asked to train to

    @property
    def exit_status(self) -> int:
        """0 when it ran to its end; stopped early, 128 + the signal's number (1 when another process of
        the job was asked to stop), so that `train && export` does not go on with an unfinished model."""
        if self.preempted_by is None:
            return 0
        try:
            return 128 + signal.Signals[self.preempted_by]
        except KeyError:
            return 1

    def describe(self) -> str:
        parts = [f"step {self.final_step}"]
        if self.start_step:
            parts.append(f"resumed from step {self.start_step}")
        if self.final_loss is not None:
            parts.append(f"loss {self.final_loss:.4f}")
        if self.val_bits_per_token is not None:
            parts.append(f"validation {self.val_bits_per_token:.4f} bits/token")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.0f} tokens/s")
        if self.mfu is not None:
            parts.append(f"MFU {self.mfu:.1%}")
        if self.skipped_steps:
            parts.append(f"{self.skipped_steps} non-finite steps skipped")
        head = "; ".join(parts)
        if self.target_step is not None and self.final_step == self.start_step >= self.target_step:
            return (
                f"nothing trained: {self.workdir} is at step {self.start_step} already, not before step "
                f"{self.target_step} (--steps or train.steps); ask for a later step to train on"
            )
        if self.preempted_by:
            return f"{self.preempted_by}: checkpoint saved at {head}; rerun the same command to resume"
        return f"trained to {head}; checkpoints in {checkpoint_dir(self.workdir)}"


def write_config(workdir: str, cfg: Config) -> None:
    """`W/config.json`: the resolved config, loadable with `config_from_dict`."""
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


def _changed_keys(saved: Mapping[str, Any], now: Mapping[str, Any], section: str) -> list[str]:
    return sorted(k for k in now.get(section, {}) if saved.get(section, {}).get(k) != now[section][k])


def _refuse_new_labels(meta: CheckpointMeta, cfg: Config, fingerprint: str, where: str) -> None:
    """A resume onto a dataset that gained composer labels (e.g. a data dir prepared again with one more
    composer folder) cannot work with any config: say what can."""
    saved = tuple(meta.config.get("encoding", {}).get("composers", ()))
    now = cfg.encoding.composers
    if meta.vocab_fingerprint == fingerprint or not saved or now[: len(saved)] != saved:
        return
    workdir = str(epath.Path(where).parent)
    raise UserError(
        f"the dataset has composer labels that {workdir} (step {meta.step}) was not trained with: "
        f"{', '.join(now[len(saved) :])}; a run's vocabulary cannot grow: fine-tune a new run from it "
        f"(`musenet-jax train --workdir NEW --init-from {workdir}`; the new labels start from its "
        "`unknown`), or resume with a --data-dir prepared (`--config` its config.json) from only the "
        "composer folders it knows"
    )


def check_resumable(meta: CheckpointMeta, cfg: Config, fingerprint: str, where: str) -> str | None:
    """Refuses a resume whose config changes what the saved arrays mean: the vocabulary (its fingerprint
    covers every encoding key that changes a token's meaning), the model's architecture or the optimizer
    (whose state is saved). Returns one
    line naming the changes that only alter how they are computed or fed (the mesh, the attention
    backend, remat, compute dtype, an encoding cut, a rotary model's context), or None when there are none."""
    _refuse_new_labels(meta, cfg, fingerprint, where)
    check_fingerprint(meta, fingerprint, where)
    saved, now = meta.config, cfg.to_dict()
    saved_model = meta.resolved_config().model
    execution = set(saved_model.free_keys(cfg.model))
    model_changes = _changed_keys(saved, now, "model")
    refused = saved_model.architecture_changes(cfg.model)
    # The optimizer's state is saved with the run; runs saved before `train.optimizer` existed used AdamW.
    if saved.get("train", {}).get("optimizer", "adamw") != cfg.train.optimizer:
        refused.append("train.optimizer")
    if refused:
        raise UserError(
            f"{where} holds a run with different {', '.join(refused)}; resume with its config.json or use a "
            "new --workdir"
        )
    allowed = [("model", k) for k in model_changes if k in execution]
    allowed += [(section, k) for section in ("encoding", "mesh") for k in _changed_keys(saved, now, section)]
    if not allowed:
        return None
    changes = ", ".join(f"{s}.{k} {saved.get(s, {}).get(k)!r} -> {now[s][k]!r}" for s, k in allowed)
    return f"resuming with {changes}"


def split_for_checkpoint(state: TrainState) -> tuple[Any, TrainState]:
    """TrainState -> (params, everything else): two checkpoint items, so inference reads params only."""
    return state.params, dataclasses.replace(state, params=None)


def join_from_checkpoint(params: Any, rest: TrainState) -> TrainState:
    return dataclasses.replace(rest, params=params)


def place_params(host: Mapping[str, Any], abstract: Any) -> Any:
    """Host arrays of the parameter tree -> global arrays shaped, typed and sharded like `abstract` (every
    process holds the whole tree and gives its devices' shards). Another model's tree is one `UserError`."""
    fits = jax.tree.structure(dict(host)) == jax.tree.structure(abstract) and all(
        np.shape(a) == b.shape for a, b in zip(jax.tree.leaves(dict(host)), jax.tree.leaves(abstract))
    )
    if not fits:
        raise UserError("the initial parameters are another model's; they do not fit this config's model")

    def put(array: Any, like: Any) -> jax.Array:
        array = np.asarray(array, like.dtype)
        return jax.make_array_from_callback(like.shape, like.sharding, lambda index: array[index])

    return jax.tree.map(put, dict(host), abstract)


def _global_batch(batch: Mapping[str, Any], sharding: Any) -> dict[str, Any]:
    """This host's rows -> arrays spanning all hosts (rows are split over the batch mesh axes)."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class _Throughput:
    """Tokens/s and MFU over the steps since the last report; the first (compiling) step is left out."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float) -> None:
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._since: float | None = None
        self._paused: float | None = None
        self._steps = 0
        self.last: tuple[float, float] | None = None

    def step_done(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()  # timing starts once the first step came back
        else:
            self._steps += 1

    def pause(self) -> None:
        """Leaves out the time spent on validation and checkpoint saves."""
        if self._since is not None:
            self._paused = time.perf_counter()

    def resume(self) -> None:
        if self._since is not None and self._paused is not None:
            self._since += time.perf_counter() - self._paused
            self._paused = None

    def report(self) -> dict[str, float]:
        if self._since is None or self._steps == 0:
            return {}
        elapsed = time.perf_counter() - self._since
        tokens_per_s = self._steps * self.tokens_per_step / elapsed
        mfu = tokens_per_s * self.flops_per_token / self.peak_flops
        self.last = (tokens_per_s, mfu)
        self._since, self._steps = time.perf_counter(), 0
        return {"tokens_per_s": tokens_per_s, "mfu": mfu}


def _absolute_data_dir(cfg: Config) -> Config:
    """The run records where its data is as an absolute path (bucket URLs as given), so that `eval`
    and the critic find it from any directory."""
    data_dir = cfg.data.data_dir
    if is_url(data_dir):
        return cfg
    return cfg.replace(data=dataclasses.replace(cfg.data, data_dir=str(pathlib.Path(data_dir).resolve())))


def train(
    cfg: Config,
    workdir: str | pathlib.Path,
    steps: int | None = None,
    *,
    resume_step: int | str | None = None,
    init_params: InitialParams | None = None,
    devices: Sequence[Any] | None = None,
    say: Callable[[str], None] = print,
) -> TrainSummary:
    """Trains until step `steps` (default `train.steps`) on the data in `data.data_dir`, resuming from
    `workdir`'s latest readable checkpoint, or from `resume_step` (a number or "best"; later steps are
    set aside). A new run starts from `init_params` (another model's parameters, a run's or a bundle's,
    loaded by `app/init_from.py`: fine-tuning) when given, composer labels the base lacks on its
    `unknown`, with a fresh optimizer at step 0; a run that resumes ignores them.
    `devices` (default: all) are the mesh's devices. One train per work directory at a time."""
    workdir = str(workdir)
    with WorkdirLock(workdir, enabled=jax.process_index() == 0, say=say):
        return _train(cfg, workdir, steps, resume_step, init_params, devices, say)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _train(
    cfg: Config,
    workdir: str,
    steps: int | None,
    resume_step: int | str | None,
    init_params: InitialParams | None,
    devices: Sequence[Any] | None,
    say: Callable[[str], None],
) -> TrainSummary:
    is_main = jax.process_index() == 0
    tell = say if is_main else (lambda _: None)
    cfg = _absolute_data_dir(cfg)
    cfg = cfg.replace(encoding=with_dataset_labels(cfg.data, cfg.encoding, say=tell))
    tc = cfg.train
    total_steps = tc.steps if steps is None else steps
    if tc.global_batch % jax.process_count():
        raise UserError(
            f"train.global_batch={tc.global_batch} must divide evenly over {jax.process_count()} processes"
        )
    tokenizer = Tokenizer(cfg.encoding)
    vocab_size = tokenizer.vocab.size
    fingerprint = tokenizer.vocab.fingerprint()

    setup = make_train_setup(cfg, make_mesh(cfg.mesh, devices), tokenizer)
    process = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    rows_of = (cfg.data, tokenizer, cfg.model.context, tc.global_batch)
    train_data = make_train_iterator(*rows_of, split="train", **process)

    checkpoints = RunCheckpoints(workdir, keep=tc.keep_checkpoints)
    saved = sorted(checkpoints.all_steps(), reverse=True)
    if resume_step is None or resume_step == "latest":
        candidates = saved
    else:
        candidates = [choose_step(checkpoints, resume_step, workdir)]
    start_step, state = 0, None
    if candidates:
        params, rest = split_for_checkpoint(setup.abstract_state())

        def load(step: int) -> tuple[str | None, Any]:
            change = check_resumable(checkpoints.read_meta(step), cfg, fingerprint, checkpoint_dir(workdir))
            restored = checkpoints.restore(
                step, abstract_params=params, abstract_train_state=rest, data_iterator=train_data
            )
            return change, join_from_checkpoint(restored["params"], restored["train_state"])

        start_step, (change, state), damaged = restore_first_readable(checkpoints, candidates, load, say=tell)
        if change:
            tell(change)
        later = [s for s in saved if s > start_step]
        if later:  # their step numbers will be saved again: move them out of the way, delete nothing
            checkpoints.close()
            if is_main:
                why = {s: "damaged" if s in damaged else "after-resume" for s in later}
                for kind in ("damaged", "after-resume"):
                    moved = [s for s in later if why[s] == kind]
                    folder = set_aside(workdir, moved, kind) if moved else None
                    if folder is not None:
                        tell(f"moved {kind} step(s) {', '.join(map(str, moved))} to {folder}")
            _sync("set_aside")
            checkpoints = RunCheckpoints(workdir, keep=tc.keep_checkpoints)
    if is_main:
        write_config(workdir, cfg)
        if load_note_facts(workdir) is None:
            save_note_facts(workdir, split_note_facts(cfg.data, tokenizer, "train"))
    meta = lambda step: CheckpointMeta(step, fingerprint, vocab_size, cfg.to_dict())  # noqa: E731
    if state is None:
        state = setup.init_state()
        if init_params is not None:  # composer labels the base lacks start from its `unknown`
            host = fine_tune_params(init_params, cfg.model, tokenizer.vocab, say=tell)
            state = dataclasses.replace(state, params=place_params(host, setup.abstract_state().params))
    elif init_params is not None:
        tell(f"resuming {workdir} from step {start_step}: the initial parameters are for a new run only")
    rows = setup.batch_sharding
    train_step = make_train_step(setup)
    eval_step = make_eval_step(setup)

    def validate(state: Any) -> float | None:
        nll, count = 0.0, 0.0
        batches = make_eval_iterator(*rows_of, split="validation", **process)
        for _, batch in zip(range(tc.eval_batches), batches):
            batch_nll, batch_count = jax.device_get(eval_step(state, _global_batch(batch, rows)))
            nll, count = nll + float(batch_nll), count + float(batch_count)
        return nll / count / math.log(2) if count else None

    throughput = _Throughput(
        tokens_per_step=tc.global_batch * cfg.model.context,
        flops_per_token=flops_per_token(cfg.model, vocab_size),
        peak_flops=total_peak_flops()[0],
    )
    guard = NonFiniteGuard(tc.max_consecutive_nonfinite)
    logger = MetricsLogger(workdir, start_step=start_step, total_steps=total_steps, enabled=is_main)
    last_saved = start_step or None
    final_loss = val_bits = None
    preempted_by = None
    step = start_step

    def save(step: int, state: Any, metrics: Mapping[str, float] | None = None) -> None:
        """Starts an async save, except amid non-finite steps: the last good checkpoint must survive."""
        nonlocal last_saved
        if guard.consecutive:
            logger.write(f"not saving step {step}: {guard.consecutive} non-finite steps in a row")
            return
        throughput.pause()
        params, rest = split_for_checkpoint(state)
        if checkpoints.save(
            step, params=params, train_state=rest, data_iterator=train_data, meta=meta(step), metrics=metrics
        ):
            last_saved = step
        throughput.resume()

    def finish_step(step: int, metrics: Mapping[str, Any]) -> None:
        """Host-side work for a step whose metrics have come back."""
        nonlocal final_loss
        values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
        throughput.step_done()
        guard.update(int(values.get("skipped", 0)), step, last_saved, checkpoint_dir(workdir))
        final_loss = values.get("loss", final_loss)
        if step % tc.log_every == 0 or step == total_steps:
            record = {k: v for k, v in values.items() if k != "skipped"}
            record["skipped_steps"] = guard.total
            record.update(throughput.report())
            logger.log(step, record)
        logger.advance(step)

    with StopRequest().installed() as stop:  # also over the last save's wait: Ctrl-C there only repeats
        try:
            pending: tuple[int, Any] | None = None
            batches: Iterator[Mapping[str, Any]] = iter(train_data)
            while step < total_steps:
                batch = _global_batch(next(batches), rows)
                state, metrics = train_step(state, batch)
                step += 1
                if pending is not None:
                    finish_step(*pending)
                pending = (step, metrics)
                due_eval = step % tc.eval_every == 0 or step == total_steps
                due_save = step % tc.checkpoint_every == 0 or step == total_steps
                stopping = stop.agreed()
                if not (due_eval or due_save or stopping):
                    continue
                finish_step(*pending)  # what follows depends on how this step went
                pending = None
                evaluated: dict[str, float] | None = None
                if due_eval:
                    throughput.pause()
                    val_bits = validate(state)
                    throughput.resume()
                    if val_bits is not None:
                        evaluated = {"val_bits_per_token": val_bits}
                        logger.log(step, evaluated)
                if stopping:
                    preempted_by = stop.signal_name or "stop requested by another process"
                    logger.write(f"{preempted_by}: saving step {step} and stopping")
                if due_save or stopping:
                    save(step, state, evaluated)
                if stopping:
                    break
            if pending is not None:
                finish_step(*pending)
        finally:
            checkpoints.wait()
            checkpoints.close()
            logger.close()
    tokens_per_s, mfu = throughput.last or (None, None)
    return TrainSummary(
        workdir=workdir,
        start_step=start_step,
        final_step=step,
        final_loss=final_loss,
        val_bits_per_token=val_bits,
        tokens_per_s=tokens_per_s,
        mfu=mfu,
        skipped_steps=guard.total,
        preempted_by=preempted_by,
        target_step=total_steps,
    )
