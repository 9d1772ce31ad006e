"""`musenet-jax generate`: compose N candidates with a checkpoint, ranked by the inner critic."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from musenet_jax.cli.common import FlagKeys, add_run_arguments, run_from_args
from musenet_jax.encoding.vocab import label_name
from musenet_jax.errors import UserError, unknown_choice

if TYPE_CHECKING:
    from musenet_jax.app.run import Run

FLAGS: FlagKeys = {
    "seconds": "sample.seconds",
    "piece_seconds": "sample.piece_seconds",
    "temperature": "sample.temperature",
    "top_k": "sample.top_k",
    "top_p": "sample.top_p",
    "num_samples": "sample.num_samples",
    "seed": "sample.seed",
    "max_new_tokens": "sample.max_new_tokens",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample pieces from a checkpoint (MIDI, piano roll, WAV) ranked by the critic",
        description=(
            "Continues a conditioning prefix (composer, instruments) and an optional MIDI intro with "
            "KV-cache sampling. Writes OUT/sample_K.mid/.json/.png (.wav with FluidSynth) and "
            "OUT/ranking.json, best first. --seconds is the length after the intro. With a model trained "
            "with anticipation, --infill refills a span of the --prompt piece and --accompany adds parts "
            "to a piece, keeping its notes as they are. Each flag below overrides the run's sample.* value "
            "of the same name."
        ),
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--composer",
        help="composer / style label the run was trained with, e.g. bach (--list-composers lists them)",
    )
    parser.add_argument("--instruments", help="comma-separated families, e.g. piano,strings")
    parser.add_argument(
        "--list-composers", action="store_true", help="print the run's composer labels, one line, and exit"
    )
    parser.add_argument(
        "--prompt", metavar="INTRO.mid", help="a MIDI intro to continue (with --infill: the piece)"
    )
    parser.add_argument(
        "--infill",
        metavar="START:END",
        help="refill the notes of --prompt that start in this span (seconds) and keep every other note as it "
        "is; needs a model trained with encoding.anticipation_s > 0",
    )
    parser.add_argument(
        "--infill-bars",
        metavar="FIRST:LAST",
        help="--infill by bars (1-based, inclusive) of the file's tempo map and time signatures",
    )
    parser.add_argument(
        "--accompany",
        metavar="PIECE.mid",
        help="add the --instruments families to this piece, keeping its notes as they are; needs a model "
        "trained with encoding.anticipation_s > 0",
    )
    parser.add_argument("--seconds", type=float, help="music to add, in seconds (default: sample.seconds)")
    parser.add_argument(
        "--piece-seconds",
        type=float,
        help="how long the whole piece is meant to be, if longer than what is composed now: the result is "
        "then its opening, with no ending yet (default: sample.piece_seconds; 0 = it ends here)",
    )
    parser.add_argument("--temperature", type=float, help="0 = greedy (default: sample.temperature)")
    parser.add_argument(
        "--top-k", type=int, help="keep the K likeliest tokens; 0 = off (default: sample.top_k)"
    )
    parser.add_argument("--top-p", type=float, help="nucleus mass in (0, 1]; 1 = off (default: sample.top_p)")
    parser.add_argument("--num-samples", type=int, help="candidates (default: sample.num_samples)")
    parser.add_argument("--seed", type=int, help="sampling seed (default: sample.seed)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="token budget per candidate; 0 = enough for --seconds (default: sample.max_new_tokens)",
    )
    parser.add_argument("--out", help="output folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.app.generate import generate, prepare_out_dir
    from musenet_jax.app.run import run_composers

    if args.list_composers:
        print(", ".join(run_composers(args.checkpoint, args.step)))
        return 0
    if args.composer is None:
        known = ", ".join(run_composers(args.checkpoint, args.step))
        raise UserError(f"--composer is required; this run knows: {known}")
    infilling = args.infill is not None or args.infill_bars is not None
    if infilling and args.accompany is not None:
        raise UserError("--infill and --accompany do not mix; give one of them")
    if infilling and args.prompt is None:
        raise UserError("--infill needs the piece as --prompt PIECE.mid")
    if args.infill is not None and args.infill_bars is not None:
        raise UserError("give the span once: --infill START:END (seconds) or --infill-bars FIRST:LAST")
    if (args.instruments is None and not infilling) or args.out is None:
        raise UserError("--instruments and --out are required, e.g. --instruments piano --out samples/")
    prepare_out_dir(args.out)  # an unwritable --out is said before the model loads
    run = run_from_args(args, FLAGS)  # the checkpoint source is resolved once, here
    composers = run.tokenizer.vocab.composers
    if label_name(args.composer) not in composers:
        raise unknown_choice("composer", args.composer, composers)
    if infilling or args.accompany is not None:
        ranking = _infill_or_accompany(run, args, infilling)
        _say_written(ranking, args.out, f"{ranking[0]['new_notes']} new notes")
        return 0
    ranking = generate(
        run,
        args.out,
        composer=args.composer,
        instruments=args.instruments,
        intro=args.prompt,
    )
    _say_written(ranking, args.out, f"{ranking[0]['seconds']:.1f} s")
    return 0


def _say_written(ranking: list[dict], out: str, size: str) -> None:
    """One line: how many candidates went where, and the best one with its scores and `size`."""
    best = ranking[0]
    score = "no critic" if best["critic_score"] is None else f"critic {best['critic_score']:.3f}"
    print(
        f"wrote {len(ranking)} candidates to {out}/; best: {best['midi']} ({score}, "
        f"mean log-prob {best['mean_logprob']:.3f}, {size})"
    )


def _infill_or_accompany(run: Run, args: argparse.Namespace, infilling: bool) -> list[dict]:
    """The ranking of `generate --infill/--infill-bars/--accompany` on the already loaded `run`."""
    from musenet_jax.app.infill import accompany, infill
    from musenet_jax.sample.infill import parse_span

    if infilling:
        span_s = parse_span(args.infill, "--infill") if args.infill is not None else None
        bars = parse_span(args.infill_bars, "--infill-bars") if args.infill_bars is not None else None
        return infill(
            run,
            args.out,
            piece=args.prompt,
            composer=args.composer,
            span_s=span_s,
            span_bars=bars,
            instruments=args.instruments,
        )
    return accompany(
        run,
        args.out,
        piece=args.accompany,
        composer=args.composer,
        instruments=args.instruments,
    )
