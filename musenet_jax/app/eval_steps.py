"""`eval --all-steps | --steps N,M | --watch`: the checkpoints of a run evaluated one by one.

Each step's report goes to `W/eval/step_<N>.json` (written whole, then renamed into place), and after
each step the table (`summary.md`) and the curve of bits per token against the step
(`bits_per_token.png`) are redrawn from every report in the folder. The JSON files are the record: a step
that has one is done, so an evaluation that was killed, or a watcher started again, carries on with the
steps still missing. A folder holds evaluations made with one set of settings (split, pieces, samples,
overrides); other settings need another folder, since their numbers would not compare.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from etils import epath

from musenet_jax.app.evaluate import evaluate
from musenet_jax.app.run import load_run, warn
from musenet_jax.app.sources import BUNDLE_FILE
from musenet_jax.errors import UserError
from musenet_jax.eval.steps_report import plot_steps, steps_table
from musenet_jax.storage import as_path, write_text_whole
from musenet_jax.train.checkpoint import RunCheckpoints

EVAL_SUBDIR = "eval"
SUMMARY = "summary.md"
CURVE = "bits_per_token.png"
_STEP_FILE = re.compile(r"step_(\d+)\.json")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What an evaluation of one step depends on besides the checkpoint (recorded in every report)."""

    split: str = "test"
    num_samples: int | None = None  # None: the run's sample.num_samples
    max_pieces: int | None = None
    seed: int = 0
    overrides: tuple[str, ...] = ()  # data.*, sample.*, critic.* of the run's config


@dataclasses.dataclass(frozen=True)
class Watch:
    """Keep evaluating checkpoints as a running job saves them, until step `until_step` is evaluated or no
    new checkpoint has come for `max_wait_s` seconds; look every `poll_s` seconds."""

    poll_s: float = 60.0
    max_wait_s: float = 3600.0
    until_step: int | None = None

    def __post_init__(self) -> None:
        if not self.poll_s > 0 or self.max_wait_s < 0:
            raise UserError(
                "--poll-s must be positive and --max-wait-s not negative, got "
                f"{self.poll_s} and {self.max_wait_s}"
            )


@dataclasses.dataclass(frozen=True)
class StepsResult:
    """Every report in the folder (by step), what this call evaluated, and the steps that would not load."""

    reports: dict[int, dict[str, Any]]
    evaluated: list[int]
    failed: dict[int, str]
    folder: epath.Path


def eval_folder(workdir: str | os.PathLike) -> epath.Path:
    return epath.Path(workdir) / EVAL_SUBDIR


def step_file(folder: epath.Path, step: int) -> epath.Path:
    return folder / f"step_{step}.json"


def checkpoint_steps(workdir: str | epath.Path) -> list[int]:
    """The steps saved in a run's checkpoints (only finished saves are listed)."""
    checkpoints = RunCheckpoints(workdir, read_only=True)
    try:
        return sorted(checkpoints.all_steps())
    finally:
        checkpoints.close()


def finished_reports(folder: epath.Path, settings: EvalSettings) -> dict[int, dict[str, Any]]:
    """The reports already in `folder`; refuses a folder whose reports were made with other settings."""
    reports: dict[int, dict[str, Any]] = {}
    wanted = _settings_record(settings)
    for path in sorted(folder.glob("step_*.json")) if folder.is_dir() else []:
        match = _STEP_FILE.fullmatch(path.name)
        if not match:
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(
                f"{path} cannot be read ({err}); delete it to evaluate step {match[1]} again"
            ) from None
        if report.get("settings") != wanted:
            raise UserError(
                f"{folder} holds evaluations made with {_describe(report.get('settings'))}, not "
                f"{_describe(wanted)}; give another --eval-dir for these settings"
            )
        reports[int(match[1])] = report
    return reports


def _check_is_run(workdir: str | epath.Path | None) -> None:
    """Only a training run has steps to go through: a missing work dir or a bundle is one line."""
    if workdir is None:
        raise UserError(
            "--all-steps, --steps and --watch go through the checkpoints of a training run: add "
            "--checkpoint WORKDIR (to evaluate the bundled model, leave them out)"
        )
    if (epath.Path(workdir) / BUNDLE_FILE).exists():
        raise UserError(
            f"--checkpoint {workdir} is an exported bundle, which holds one step: evaluate it without "
            "--all-steps, --steps or --watch, or give the work dir of the run it came from"
        )


def evaluate_steps(
    workdir: str | epath.Path | None,
    settings: EvalSettings = EvalSettings(),
    *,
    steps: Sequence[int] | None = None,
    watch: Watch | None = None,
    folder: str | epath.Path | None = None,
    say: Callable[[str], None] = print,
    show_progress: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StepsResult:
    """Evaluates `steps` of the run (None: every saved step) that have no report in `folder` (default
    `W/eval`) yet; with `watch`, goes on with the checkpoints that appear until its stop condition."""
    _check_is_run(workdir)
    folder = epath.Path(folder) if folder is not None else eval_folder(workdir)
    reports = finished_reports(folder, settings)
    wanted = None if steps is None else sorted(set(steps))
    if watch is None:
        saved = checkpoint_steps(workdir)
        if not saved:
            raise UserError(f"no checkpoint in {workdir}; train first, or --watch a run that is starting")
    if wanted is not None and watch is None:
        missing = [s for s in wanted if s not in saved]
        if missing:
            raise UserError(
                f"no checkpoint for step(s) {', '.join(map(str, missing))} in {workdir}; saved steps: "
                f"{', '.join(map(str, saved)) or 'none'}"
            )
    for step in sorted(reports):
        if wanted is None or step in wanted:
            say(f"step {step}: done already ({reports[step]['bits_per_token']:.4f} bits/token)")
    evaluated: list[int] = []
    failed: dict[int, str] = {}
    last_news = clock()
    while True:
        saved = checkpoint_steps(workdir)
        todo = [s for s in saved if (wanted is None or s in wanted) and s not in reports and s not in failed]
        for step in todo:
            try:
                run = load_run(workdir, step, overrides=settings.overrides, say=warn)
            except UserError as err:  # damaged, or deleted by the job's keep-N since it was listed
                failed[step] = str(err)
                say(f"step {step}: not evaluated: {err}")
                continue
            report = evaluate(
                run,
                split=settings.split,
                num_samples=settings.num_samples,
                max_pieces=settings.max_pieces,
                seed=settings.seed,
                show_progress=show_progress,
            )
            report["settings"] = _settings_record(settings)
            write_text_whole(step_file(folder, step), json.dumps(report, indent=1) + "\n")
            reports[step] = report
            evaluated.append(step)
            _redraw(folder, reports, workdir)
            say(_step_line(report))
        if todo:
            last_news = clock()
        if reports and not (folder / SUMMARY).exists():
            _redraw(folder, reports, workdir)
        if watch is None or _watch_done(watch, wanted, reports):
            break
        if clock() - last_news >= watch.max_wait_s:
            say(f"no new checkpoint for {watch.max_wait_s:g} s; stopping")
            break
        sleep(watch.poll_s)
    return StepsResult(reports, evaluated, failed, folder)


def _watch_done(watch: Watch, wanted: list[int] | None, reports: dict[int, dict[str, Any]]) -> bool:
    if wanted is not None and all(s in reports for s in wanted):
        return True
    return watch.until_step is not None and any(s >= watch.until_step for s in reports)


def _step_line(report: dict[str, Any]) -> str:
    line = f"step {report['step']}: {report['bits_per_token']:.4f} bits/token"
    if report.get("bits_per_note") is not None:
        line += f", {report['bits_per_note']:.4f} bits/note, {report['bits_per_second']:.4f} bits/second"
    return line


def _redraw(folder: epath.Path, reports: dict[int, dict[str, Any]], workdir: str | epath.Path) -> None:
    rows = list(reports.values())
    write_text_whole(folder / SUMMARY, steps_table(rows))
    title = f"{as_path(workdir).name}: {rows[0]['split']} bits/token by checkpoint"
    plot_steps(rows, folder / CURVE, title=title)


def _settings_record(settings: EvalSettings) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def _describe(record: Any) -> str:
    if not isinstance(record, dict):
        return "unrecorded settings"
    return ", ".join(f"{k}={v}" for k, v in record.items())
