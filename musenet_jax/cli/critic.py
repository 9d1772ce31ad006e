"""`musenet-jax critic`: the inner critic pass: make fakes, train real vs generated, score MIDI files."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("critic", help="the inner critic: make-fakes, train (ROC AUC), score MIDI files")
    commands = parser.add_subparsers(dest="critic_command", metavar="STEP", required=True)

    fakes = commands.add_parser("make-fakes", help="sample the model's own pieces, conditioned like real ones")
    fakes.add_argument("--checkpoint", required=True, metavar="WORKDIR")
    fakes.add_argument("--num", type=int, help="pieces to generate (default: sample.critic_fakes)")
    fakes.add_argument("--out", required=True, help="folder for fake_K.npy (tokens) and fake_K.mid")
    fakes.add_argument("--data-dir", help="dataset whose pieces give composer, instruments, length (default: the run's)")
    fakes.add_argument("--split", default="train")
    fakes.add_argument("--seed", type=int, default=0)
    fakes.set_defaults(run=run_make_fakes)

    train = commands.add_parser("train", help="train the critic on real vs generated; report held-out ROC AUC")
    train.add_argument("--checkpoint", required=True, metavar="WORKDIR", help="the critic is stored in WORKDIR/critic")
    train.add_argument("--data-dir", help="dataset of real pieces (default: the run's data.data_dir)")
    train.add_argument("--split", default="train", help="split the real pieces come from (default: train)")
    train.add_argument("--fakes", required=True, help="folder from `critic make-fakes` (or any .mid files)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                       help="e.g. --set sample.critic_finetune_trunk=true --set sample.critic_steps=500")
    train.set_defaults(run=run_train)

    score = commands.add_parser("score", help="print the probability that each MIDI file is real music")
    score.add_argument("--checkpoint", required=True, metavar="WORKDIR")
    score.add_argument("--composer", help="composer token for the files (default: unknown)")
    score.add_argument("files", nargs="+", metavar="FILE.mid")
    score.set_defaults(run=run_score)


def run_make_fakes(args: argparse.Namespace) -> int:
    from musenet_jax.critic.fakes import make_fakes

    count = make_fakes(args.checkpoint, args.out, args.num, data_dir=args.data_dir, split=args.split, seed=args.seed)
    print(f"wrote {count} generated pieces to {args.out}/ (fake_K.npy tokens, fake_K.mid)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from musenet_jax.critic.training import train_critic_in_workdir

    report = train_critic_in_workdir(args.checkpoint, args.fakes, data_dir=args.data_dir, split=args.split,
                                     overrides=args.overrides, seed=args.seed)
    print(report.describe())
    return 0


def run_score(args: argparse.Namespace) -> int:
    from musenet_jax.critic.scoring import critic_logits, probability_real
    from musenet_jax.critic.store import load_critic
    from musenet_jax.errors import UserError
    from musenet_jax.train.checkpoint import restore_for_inference

    _, model, tokenizer = restore_for_inference(args.checkpoint)
    loaded = load_critic(args.checkpoint, model, tokenizer.vocab.fingerprint())
    if loaded is None:
        raise UserError(f"no trained critic in {args.checkpoint}; run `musenet-jax critic train` first")
    pieces = [tokenizer.encode(path, composer=args.composer) for path in args.files]
    scores = probability_real(critic_logits(loaded[0], tokenizer, pieces))
    for path, score in zip(args.files, scores):
        print(f"{score:.4f}  {path}")
    return 0
