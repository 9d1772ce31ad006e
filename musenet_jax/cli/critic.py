"""`musenet-jax critic`: the inner critic pass: make fakes, train real vs generated, score MIDI files."""

from __future__ import annotations

import argparse

from musenet_jax.cli.common import add_run_arguments, run_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "critic", help="the inner critic: make-fakes, train (ROC AUC), score MIDI files"
    )
    commands = parser.add_subparsers(dest="critic_command", metavar="STEP", required=True)

    fakes = commands.add_parser(
        "make-fakes", help="sample the model's own pieces, conditioned like real ones"
    )
    add_run_arguments(fakes)
    fakes.add_argument("--num", type=int, help="pieces to generate (default: critic.fakes)")
    fakes.add_argument("--out", required=True, help="folder for fake_K.npy (tokens) and fake_K.mid")
    fakes.add_argument(
        "--split", default="train", help="split whose pieces give composer, instruments, length"
    )
    fakes.add_argument("--seed", type=int, default=0)
    fakes.set_defaults(run=run_make_fakes)

    train = commands.add_parser(
        "train", help="train the critic on real vs generated; report held-out ROC AUC"
    )
    add_run_arguments(train)
    train.add_argument("--split", default="train", help="split the real pieces come from (default: train)")
    train.add_argument("--fakes", required=True, help="folder from `critic make-fakes` (or any .mid files)")
    train.add_argument("--seed", type=int, default=0)
    train.epilog = (
        "e.g. --set critic.finetune_trunk=true --set critic.steps=500; the critic is stored in WORKDIR/critic"
    )
    train.set_defaults(run=run_train)

    score = commands.add_parser("score", help="print the probability that each MIDI file is real music")
    add_run_arguments(score)
    score.add_argument("--composer", help="composer token for the files (default: unknown)")
    score.add_argument("files", nargs="+", metavar="FILE.mid")
    score.set_defaults(run=run_score)

    rerank = commands.add_parser(
        "rerank",
        help="measure the critic: its pick of K candidates vs a random pick, on the distance of the picks' "
        "statistics from a split's",
    )
    add_run_arguments(rerank)
    rerank.add_argument(
        "--requests", type=int, default=16, help="requests, each like a real piece (default: 16)"
    )
    rerank.add_argument("--candidates", type=int, default=4, help="candidates per request (default: 4)")
    rerank.add_argument("--split", default="test", help="split the requests and the reference come from")
    rerank.add_argument("--seed", type=int, default=0)
    rerank.add_argument("--json", action="store_true", help="print the whole report as JSON")
    rerank.set_defaults(run=run_rerank)


def run_make_fakes(args: argparse.Namespace) -> int:
    from musenet_jax.app.make_fakes import make_fakes

    count = make_fakes(
        run_from_args(args, {"num": "critic.fakes"}), args.out, split=args.split, seed=args.seed
    )
    print(f"wrote {count} generated pieces to {args.out}/ (fake_K.npy tokens, fake_K.mid)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from musenet_jax.app.critic import train_critic_for_run

    report = train_critic_for_run(run_from_args(args), args.fakes, split=args.split, seed=args.seed)
    print(report.describe())
    return 0


def run_score(args: argparse.Namespace) -> int:
    from musenet_jax.app.critic import score_files

    scored = score_files(run_from_args(args), args.files, composer=args.composer)
    for path, score in scored:
        print(f"{score:.4f}  {path}")
    return 0 if len(scored) == len(args.files) else 1


def run_rerank(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from musenet_jax.app.rerank import measure_reranking, reranking_table
    from musenet_jax.data.pieces import load_split_pieces

    run = run_from_args(args)
    pieces = load_split_pieces(run.cfg.data, run.cfg.encoding, args.split)
    with tqdm(total=args.requests, unit="request", desc="candidates") as bar:
        report = measure_reranking(
            run,
            pieces,
            requests=args.requests,
            candidates=args.candidates,
            seed=args.seed,
            progress=bar.update,
        )
    print(json.dumps(report, indent=1) if args.json else reranking_table(report))
    return 0
