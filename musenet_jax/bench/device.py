"""The first check on a lent GPU: kernel tests compiled on it, attention backends and train steps timed.

`musenet-jax bench device --out device_check.json` (or launch/device_check.sh) runs, each part in its own
process under a time budget (PARTS, together under 8 minutes): the Triton kernels' equality tests compiled
on the device (not interpreted), the attention backends forward + backward at n = 4096 and 16384 (dense,
xla_blocksparse, pallas, JAX's Pallas flash and cuDNN's flash attention), and the `small` config's and a
2-layer `musenet_72l` train step (tokens/s, MFU against hardware.py's data sheet). Everything goes into ONE
JSON file with the device, the JAX version and each part's status: a part that fails, crashes or runs out
of time is recorded and the rest go on. Without a GPU (or with --dry-run) the same plan runs at tiny shapes
on the CPU, Pallas kernels interpreted: that tests the plumbing, and its figures are no GPU's.

`--tune-gpu` runs instead the sweep of the Triton kernels' num_warps / num_stages (bench/gpu_tune.py) and
prints its best as TABLE lines for pallas_kernels/triton_tuning.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from musenet_jax.bench.gpu_tune import TuneShape
from musenet_jax.errors import UserError, one_line
from pallas_kernels.triton_tuning import CANDIDATES

REPORT = "musenet-jax bench device"  # the JSON's "report" field: a file that has it is one this command wrote
TOTAL_BUDGET_S = 480  # the whole check on a GPU: 8 minutes
# The checkout: tests/ and pallas_kernels/ beside the package.
ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNEL_TESTS = "tests/pallas_kernels/test_gpu_kernels_compiled.py"
# Rows of a part are not started after this fraction of its budget, so that it ends with what it has
# instead of being stopped (a stopped part keeps the rows it wrote anyway).
ROW_DEADLINE = 0.8


@dataclass(frozen=True)
class Part:
    """One step of the check: its process may run `budget_s` seconds (ok, failed, timeout or skipped)."""

    name: str
    budget_s: int
    about: str


PARTS: tuple[Part, ...] = (
    Part(
        "kernel_tests",
        100,
        f"pytest {KERNEL_TESTS}: the Triton kernels compiled on the device equal the dense reference "
        "(outputs, dq/dk/dv) and touch only the active blocks",
    ),
    Part("attention", 180, "attention backends, forward and forward+backward median ms (bench attention)"),
    Part("train_small", 60, "the small config's train step: tokens/s and MFU (bench train)"),
    Part("train_musenet_72l_2layers", 120, "musenet_72l cut to 2 layers: tokens/s and MFU (bench train)"),
)
TUNE_PART = Part("gpu_tune", 240, "Triton num_warps / num_stages sweep (bench/gpu_tune.py)")


@dataclass(frozen=True)
class Plan:
    """The shapes of one run: on a GPU, or the dry run's tiny ones on a CPU."""

    attention_args: tuple[str, ...]  # `bench attention` arguments besides --seq, --pattern, --backends
    attention_seqs: tuple[int, ...]
    attention_patterns: tuple[str, ...]
    attention_backends: tuple[str, ...]
    train: dict[str, tuple[str, tuple[str, ...]]]  # part -> (config, --set overrides)
    train_steps: int
    train_rounds: int
    kernel_tests_select: str  # a pytest -k expression; "" runs the whole file
    tune: TuneShape


BACKENDS = ("dense", "xla_blocksparse", "pallas", "jax_flash", "jax_cudnn")
GPU_PLAN = Plan(
    attention_args=(
        *("--batch", "1", "--heads", "24", "--head-dim", "64", "--stride", "128", "--summary", "32"),
        *("--block-size", "128", "--dtype", "bfloat16", "--repeats", "5"),
    ),  # one sequence of musenet_72l's attention
    attention_seqs=(4096, 16384),
    attention_patterns=("strided", "fixed"),
    attention_backends=BACKENDS,
    train={
        "train_small": ("small", ()),
        "train_musenet_72l_2layers": ("musenet_72l", ("model.n_layers=2", "train.global_batch=8")),
    },
    train_steps=5,
    train_rounds=2,
    kernel_tests_select="",
    # musenet_72l's attention (the model that runs the Pallas kernels) in bf16, and float32 (tests, tiny runs)
    tune=TuneShape(seq=4096, heads=24, head_dims=(64,), dtypes=("bfloat16", "float32")),
)
DRY_RUN_PLAN = Plan(
    attention_args=(
        *("--batch", "1", "--heads", "2", "--head-dim", "16", "--stride", "128", "--summary", "32"),
        *("--block-size", "128", "--dtype", "bfloat16", "--repeats", "1"),
    ),
    attention_seqs=(256,),
    attention_patterns=("strided",),
    attention_backends=BACKENDS,
    train={
        "train_small": (
            "small",
            ("model.n_layers=2", "model.d_model=48", "model.context=64", "train.global_batch=2"),
        ),
        "train_musenet_72l_2layers": (
            "musenet_72l",
            (
                "model.n_layers=2",
                "model.d_model=32",
                "model.n_heads=2",
                "model.context=256",
                "train.global_batch=1",
            ),
        ),
    },
    train_steps=1,
    train_rounds=1,
    kernel_tests_select="match_dense and float32 and n256 and h4",
    tune=TuneShape(
        seq=256, heads=1, head_dims=(16,), dtypes=("float32",), repeats=1, candidates=CANDIDATES[:2]
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="device_check.json",
        help="the JSON file with every figure (default: %(default)s); an existing file is replaced only if "
        "this command wrote it",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="the same plan at tiny shapes on the CPU, Pallas kernels interpreted: tests the plumbing "
        "(automatic without a GPU)",
    )
    parser.add_argument(
        "--tune-gpu",
        action="store_true",
        help="instead: time every num_warps/num_stages candidate of the Triton kernels on this GPU and print "
        "the best as pallas_kernels/triton_tuning.py TABLE lines (every timing in --out)",
    )
    # One part of the plan, run by the check in a process of its own (not for users).
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=float, default=0.0, help=argparse.SUPPRESS)


def _plan(dry_run: bool) -> Plan:
    return DRY_RUN_PLAN if dry_run else GPU_PLAN


# ---- the parts, each run in its own process (`--part NAME`) -------------------------------------------


def _append(out: pathlib.Path, row: dict) -> None:
    """One result row, written at once: a part stopped at its budget keeps the rows it had."""
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _attention_rows(plan: Plan, out: pathlib.Path, keep_going) -> None:
    from musenet_jax.attention.patterns import by_name
    from musenet_jax.bench import attention

    parser = argparse.ArgumentParser()
    attention.add_arguments(parser)
    args = parser.parse_args(list(plan.attention_args))
    for seq in plan.attention_seqs:
        for name in plan.attention_patterns:
            pattern = by_name(name, stride=args.stride, summary=args.summary)
            for backend in plan.attention_backends:
                row = {"pattern": pattern.name, "seq": seq, "backend": backend}
                if not keep_going():
                    _append(out, row | {"skipped": "the part's time budget was spent"})
                    continue
                try:
                    row |= attention.measure(args, pattern, seq, backend)
                except Exception as err:  # noqa: BLE001 - one backend failing (OOM, no cuDNN) is a result
                    row["error"] = one_line(err)
                _append(out, row)


def _train_row(plan: Plan, part: str, out: pathlib.Path) -> None:
    from musenet_jax.bench.train import measure_train_step
    from musenet_jax.config import load_config

    config, overrides = plan.train[part]
    cfg = load_config(config, list(overrides))
    report = measure_train_step(cfg, steps=plan.train_steps, rounds=plan.train_rounds)
    _append(out, report | {"overrides": list(overrides)})


def _tune_rows(plan: Plan, out: pathlib.Path, keep_going, *, interpret: bool) -> None:
    from musenet_jax.bench.gpu_tune import sweep

    for row in sweep(plan.tune, interpret=interpret, keep_going=keep_going):
        _append(out, row)


def run_part(name: str, *, dry_run: bool, out: pathlib.Path, budget_s: float) -> int:
    """One part of the plan in this process, its rows appended to `out` as JSON lines."""
    plan = _plan(dry_run)
    start = time.perf_counter()

    def keep_going() -> bool:
        return not budget_s or time.perf_counter() - start < ROW_DEADLINE * budget_s

    if name == "attention":
        _attention_rows(plan, out, keep_going)
    elif name in plan.train:
        _train_row(plan, name, out)
    elif name == TUNE_PART.name:
        _tune_rows(plan, out, keep_going, interpret=dry_run)
    else:
        raise UserError(f"unknown part {name!r}")
    return 0


# ---- the check: parts in child processes, one JSON ------------------------------------------------------


def _text(stream) -> str:
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def run_process(argv: list[str], *, env: dict[str, str], budget_s: float) -> dict:
    """A part's process under its budget: status (ok / failed / timeout), seconds and, unless ok, the
    error (the last line it printed to stderr) and its stderr's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired as err:
        return {
            "status": "timeout",
            "seconds": round(time.perf_counter() - start, 1),
            "error": f"still running after its budget of {budget_s:g} s; stopped",
            "stderr_tail": _text(err.stderr)[-2000:],
        }
    result = {"status": "ok", "seconds": round(time.perf_counter() - start, 1)}
    if done.returncode:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        result |= {
            "status": "failed",
            "returncode": done.returncode,
            "error": lines[-1][:300] if lines else f"exit status {done.returncode}",
            "stderr_tail": done.stderr[-2000:],
            "stdout_tail": done.stdout[-2000:],
        }
    return result


def _read_rows(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _junit_summary(path: pathlib.Path) -> dict:
    """Counts and failing tests of a pytest run from its JUnit XML."""
    cases = ET.parse(path).getroot().iter("testcase")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures = []
    for case in cases:
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            counts["failed"] += 1
            failures.append(f"{case.get('name')}: {(problem.get('message') or '').splitlines()[0][:300]}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts | {"failures": failures}


def _kernel_tests(plan: Plan, env: dict[str, str], budget_s: float, work: pathlib.Path) -> dict:
    if not (ROOT / KERNEL_TESTS).exists():
        return {
            "status": "skipped",
            "error": f"{KERNEL_TESTS} is not beside the package: run from a checkout",
        }
    xml = work / "kernel_tests.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", KERNEL_TESTS, f"--junitxml={xml}"]
    argv += ["-k", plan.kernel_tests_select] if plan.kernel_tests_select else []
    result = run_process(argv, env=env, budget_s=budget_s)
    if not xml.exists():
        return result
    summary = _junit_summary(xml)
    status = "failed" if summary["failed"] else "ok" if summary["passed"] else "skipped"
    if summary["failures"] and result["status"] != "timeout":
        result["error"] = f"{summary['failed']} failed, the first: {summary['failures'][0]}"
    return result | summary | {"status": "timeout" if result["status"] == "timeout" else status}


def _with_speedups(rows: list[dict]) -> list[dict]:
    """Each measured attention row gets its forward+backward speed-up over dense at the same shape."""
    dense = {(r["pattern"], r["seq"]): r for r in rows if r["backend"] == "dense" and "fwd_bwd_ms" in r}
    for row in rows:
        base = dense.get((row["pattern"], row["seq"]))
        if base is not None and "fwd_bwd_ms" in row:
            row["speedup_fwd_bwd_vs_dense"] = base["fwd_bwd_ms"] / row["fwd_bwd_ms"]
    return rows


def _child_part(part: Part, *, dry_run: bool, env: dict[str, str], work: pathlib.Path) -> dict:
    out = work / f"{part.name}.jsonl"
    argv = [sys.executable, "-m", "musenet_jax.cli.main", "bench", "device", "--part", part.name]
    argv += ["--part-out", str(out), "--budget-s", str(part.budget_s)] + (["--dry-run"] if dry_run else [])
    result = run_process(argv, env=env, budget_s=part.budget_s)
    rows = _read_rows(out)
    if part.name == "attention":
        return result | {"rows": _with_speedups(rows)}
    if part.name == TUNE_PART.name:
        return result | {"rows": rows}
    return result | ({"result": rows[0]} if rows else {})


def device_info() -> dict:
    """The device the check runs on, and the JAX_PLATFORMS name its parts are started with."""
    import jax
    import jaxlib

    # This process only asks which device there is: the parts allocate, so it must not take the GPU's
    # memory (the variable is read when the backend starts, here; the parts start with the user's own).
    ours = "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        device = jax.devices()[0]
    finally:
        if ours:
            del os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"]
    version = getattr(device.client, "platform_version", "") or ""
    name = {"gpu": "rocm" if "rocm" in version.lower() else "cuda"}.get(device.platform, device.platform)
    return {
        "device": getattr(device, "device_kind", device.platform),
        "platform": device.platform,
        "platform_version": version,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "jax_platforms": name,
    }


def device_check(
    parts: tuple[Part, ...], *, dry_run: bool, jax_platforms: str, progress=print, on_part=None
) -> dict:
    """Runs `parts` one after another, each in its own process under its budget, and returns
    {part name: its status, seconds, budget and figures (or error)}; a part's failure stops only itself.
    `on_part(results so far)` is called after each part (the report is written as it grows)."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu" if dry_run else jax_platforms
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    if dry_run:
        env["MUSENET_DEVICE_DRY_RUN"] = "1"  # the kernel tests run interpreted on the CPU
    plan = _plan(dry_run)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="musenet-device-") as tmp:
        for part in parts:
            progress(f"{part.name} (budget {part.budget_s} s): {part.about}")
            if part.name == "kernel_tests":
                result = _kernel_tests(plan, env, part.budget_s, pathlib.Path(tmp))
            else:
                result = _child_part(part, dry_run=dry_run, env=env, work=pathlib.Path(tmp))
            results[part.name] = {"budget_s": part.budget_s, "about": part.about} | result
            progress(f"  -> {_summary(result)}")
            if on_part is not None:
                on_part(results)
    return results


def _summary(result: dict) -> str:
    line = f"{result['status']} in {result.get('seconds', 0):g} s"
    if "passed" in result:
        line += f", {result['passed']} passed, {result['failed']} failed, {result['skipped']} skipped"
    rows = result.get("rows", [])
    if rows:
        done = sum("ms" in r or "fwd_bwd_ms" in r for r in rows)
        line += f", {done} of {len(rows)} rows timed"
    if "result" in result:
        line += f", {result['result']['tokens_per_s']:,.0f} tokens/s, MFU {result['result']['mfu']:.1%}"
    return line + (f" ({result['error']})" if result.get("error") else "")


def _check_out(out: pathlib.Path) -> None:
    """`--out` must be new or a report of this command: anything else there is the user's."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file path for the JSON report")
    if out.exists():
        try:
            ours = json.loads(out.read_text()).get("report") == REPORT
        except (ValueError, AttributeError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise UserError(f"--out {out} exists and is not a report of this command; choose another path")


def run(args: argparse.Namespace) -> int:
    if args.part:
        return run_part(
            args.part, dry_run=args.dry_run, out=pathlib.Path(args.part_out), budget_s=args.budget_s
        )
    out = pathlib.Path(args.out)
    _check_out(out)
    info = device_info()
    on_gpu = info["platform"] == "gpu"
    if args.tune_gpu and not on_gpu and not args.dry_run:
        raise UserError(
            f"bench device --tune-gpu times Triton kernels and needs a GPU; this machine has "
            f"{info['platform']} only (--dry-run runs the sweep's plumbing here at a tiny shape)"
        )
    dry_run = args.dry_run or not on_gpu
    if not args.dry_run and not on_gpu:
        print(
            f"no GPU here ({info['platform']}): running the dry-run plan at tiny shapes, Pallas kernels "
            "interpreted; its figures are not GPU figures",
            flush=True,
        )
    started = datetime.datetime.now(datetime.UTC)
    head = {
        "report": REPORT,
        **info,
        "dry_run": dry_run,
        "started_utc": started.isoformat(timespec="seconds"),
        "plan": dataclasses.asdict(_plan(dry_run)),
    }

    def write(results: dict) -> None:
        wall_s = round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1)
        _write_report(out, head | {"wall_s": wall_s, "parts": results})

    parts = (TUNE_PART,) if args.tune_gpu else PARTS
    results = device_check(parts, dry_run=dry_run, jax_platforms=info["jax_platforms"], on_part=write)
    if args.tune_gpu:
        _print_tune_table(results[TUNE_PART.name].get("rows", []), dry_run=dry_run)
    failed = [name for name, r in results.items() if r["status"] != "ok"]
    print(f"wrote {out}" + (f"; not ok: {', '.join(failed)}" if failed else "; every part ok"))
    return 1 if failed else 0


def _write_report(out: pathlib.Path, report: dict) -> None:
    from etils import epath

    from musenet_jax.storage import write_text_whole

    write_text_whole(epath.Path(out), json.dumps(report, indent=1) + "\n")


def _print_tune_table(rows: list[dict], *, dry_run: bool) -> None:
    from musenet_jax.bench.gpu_tune import best_params
    from pallas_kernels.triton_tuning import table_lines

    best = best_params(rows)
    if not best:
        print("no candidate was timed: no TABLE lines")
        return
    if dry_run:
        print(
            "dry run: kernels interpreted on the CPU, so these lines only show the format; do not paste them"
        )
    else:
        print(
            "fastest candidates: paste into pallas_kernels/triton_tuning.py TABLE (replacing the same keys)"
        )
    print("\n".join(table_lines(best)))
