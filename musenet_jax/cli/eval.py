"""`musenet-jax eval`: bits per token, per note and per second on a split and musical statistics of samples
vs that split, for one checkpoint or for every checkpoint of a run (`--all-steps`, `--steps`, `--watch`)."""

from __future__ import annotations

import argparse

from musenet_jax.cli.common import RUN_FLAGS, add_run_arguments, flag_overrides, run_from_args
from musenet_jax.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="held-out bits/token (by token kind), bits/note, bits/second and sample vs split statistics",
        description=(
            "Evaluates one checkpoint (--step), or many: --all-steps, --steps N,M or --watch write one "
            "report per step to WORKDIR/eval/step_N.json, the table summary.md and bits_per_token.png; "
            "steps with a report there are not evaluated again."
        ),
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--split",
        default="test",
        help="split to evaluate (default: test); choose sampling settings on validation, report on test",
    )
    parser.add_argument("--composer", help="only the split's pieces of this composer (and samples like them)")
    parser.add_argument(
        "--controls",
        action="store_true",
        help="also put real pieces of the other held-out split, and shuffled-pitch, random-walk, "
        "opening-then-random and opening-then-drone pieces made from them, through the gate",
    )
    parser.add_argument(
        "--num-samples", type=int, help="samples for the statistics; 0 = none (default: sample.num_samples)"
    )
    parser.add_argument("--max-pieces", type=int, help="evaluate only the first N pieces of the split")
    parser.add_argument(
        "--position-bucket",
        type=int,
        metavar="TOKENS",
        help="rows of bits/token by position in the context window: TOKENS positions each (default: "
        "the context in 8)",
    )
    parser.add_argument(
        "--window",
        type=int,
        metavar="TOKENS",
        help="score with windows of TOKENS instead of the model's context: the same tokens with less of "
        "the past in view, against a run at its whole context to see what the far context is worth",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--infill-spans",
        type=float,
        metavar="SECONDS",
        help="instead: bits/token of the notes inside one SECONDS-long span per piece (seeded), scored with "
        "the notes after the span given (a run trained with anticipation) and left to right",
    )
    parser.add_argument(
        "--accompany-stats",
        metavar="FAMILY",
        help="instead: on each piece with a FAMILY part and another one (its first sample.seconds), the "
        "model writes FAMILY given the rest; onsets on the given part's onsets and key consistency of its "
        "part, of the real one and of a control (its part for another piece's given part), and whether "
        "it is closer to the real part than the control (a run trained with anticipation)",
    )
    parser.add_argument(
        "--given",
        metavar="FAMILIES",
        help="--accompany-stats: only these families are given (e.g. piano), the piece's others left out "
        "(default: every other family)",
    )
    parser.add_argument(
        "--midi-dir",
        metavar="DIR",
        help="--accompany-stats: the MIDI files below DIR instead of a split (held-out pieces of your "
        "own), their tempo maps' beats on the grid; --composer labels them (default: unknown)",
    )
    many = parser.add_argument_group("many checkpoints")
    many.add_argument("--all-steps", action="store_true", help="evaluate every saved checkpoint")
    many.add_argument("--steps", metavar="N,M", help="evaluate these saved steps, e.g. 1000,2000")
    many.add_argument(
        "--watch",
        action="store_true",
        help="keep evaluating new checkpoints of a running job as they are saved (with --steps: those)",
    )
    many.add_argument(
        "--poll-s", type=float, default=60.0, help="--watch: seconds between looks (default 60)"
    )
    many.add_argument(
        "--max-wait-s",
        type=float,
        default=3600.0,
        help="--watch: stop when no new checkpoint came for this long (default 3600)",
    )
    many.add_argument("--until-step", type=int, help="--watch: stop once a step >= this one is evaluated")
    many.add_argument("--eval-dir", help="folder of the per-step reports (default: WORKDIR/eval)")
    parser.set_defaults(run=run)


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts and durations in range (and finite) before anything loads."""
    if args.num_samples is not None and args.num_samples < 0:
        raise UserError(f"--num-samples must be >= 0 (0 = no samples), got {args.num_samples}")
    if args.max_pieces is not None and args.max_pieces < 1:
        raise UserError(f"--max-pieces must be at least 1, got {args.max_pieces}")
    if args.position_bucket is not None and args.position_bucket < 1:
        raise UserError(f"--position-bucket must be at least 1, got {args.position_bucket}")
    for flag, value in (("--poll-s", args.poll_s), ("--max-wait-s", args.max_wait_s)):
        if not 0 < value < float("inf"):  # NaN too
            raise UserError(f"{flag} must be a positive number of seconds, got {value}")


def run(args: argparse.Namespace) -> int:
    _check_numbers(args)
    modes = {"--infill-spans": args.infill_spans is not None, "--accompany-stats": bool(args.accompany_stats)}
    alone = [flag for flag, given in modes.items() if given]
    if len(alone) == 2:
        raise UserError("give --infill-spans or --accompany-stats, not both")
    if (args.given or args.midi_dir) and not args.accompany_stats:
        raise UserError("--given and --midi-dir go with --accompany-stats FAMILY")
    if alone and (args.all_steps or args.steps or args.watch):
        raise UserError(f"{alone[0]} scores one checkpoint (--step): leave out --all-steps, --steps, --watch")
    if args.all_steps or args.steps or args.watch:
        if args.position_bucket is not None or args.window is not None:
            raise UserError(
                "--position-bucket and --window are for one checkpoint; per-step reports use the defaults"
            )
        return _run_steps(args)
    import json

    if args.infill_spans is not None:
        from musenet_jax.app.evaluate import evaluate_infill_spans
        from musenet_jax.eval.infill_spans import format_spans

        spans = evaluate_infill_spans(
            run_from_args(args),
            seconds=args.infill_spans,
            split=args.split,
            max_pieces=args.max_pieces,
            seed=args.seed,
        )
        print(json.dumps(spans, indent=2) if args.json else format_spans(spans))
        return 0
    if args.accompany_stats:
        from musenet_jax.app.accompaniment_eval import evaluate_accompaniment
        from musenet_jax.eval.report import format_accompaniment

        stats = evaluate_accompaniment(
            run_from_args(args),
            family=args.accompany_stats,
            split=args.split,
            midi_dir=args.midi_dir,
            composer=args.composer,
            given=args.given,
            max_pieces=args.max_pieces,
            seed=args.seed,
            show_progress=not args.json,
        )
        print(json.dumps(stats, indent=2) if args.json else format_accompaniment(stats))
        return 0

    from musenet_jax.app.evaluate import evaluate
    from musenet_jax.eval.report import format_table

    report = evaluate(
        run_from_args(args),
        split=args.split,
        num_samples=args.num_samples,
        max_pieces=args.max_pieces,
        seed=args.seed,
        show_progress=not args.json,
        composer=args.composer,
        controls=args.controls,
        position_bucket=args.position_bucket,
        window=args.window,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _run_steps(args: argparse.Namespace) -> int:
    from musenet_jax.app.eval_steps import SUMMARY, EvalSettings, Watch, evaluate_steps
    from musenet_jax.eval.steps_report import steps_table

    if args.step != "latest":
        raise UserError("--step picks one checkpoint; leave it out with --all-steps, --steps or --watch")
    if args.all_steps and args.steps:
        raise UserError("give --all-steps or --steps N,M, not both")
    settings = EvalSettings(
        split=args.split,
        num_samples=args.num_samples,
        max_pieces=args.max_pieces,
        seed=args.seed,
        overrides=tuple(flag_overrides(args, RUN_FLAGS)),
    )
    watch = Watch(args.poll_s, args.max_wait_s, args.until_step) if args.watch else None
    result = evaluate_steps(
        args.checkpoint,
        settings,
        steps=_parse_steps(args.steps) if args.steps else None,
        watch=watch,
        folder=args.eval_dir,
    )
    if result.reports:
        print(steps_table(list(result.reports.values())), end="")
        print(f"wrote {result.folder}/step_N.json, {SUMMARY} and bits_per_token.png")
    if result.failed:
        print(f"{len(result.failed)} step(s) not evaluated: {', '.join(map(str, result.failed))}")
        return 1
    return 0


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"bad --steps {text!r}; expected step numbers like 1000,2000") from None
    if not steps:
        raise UserError("--steps names no step; expected step numbers like 1000,2000")
    return steps
