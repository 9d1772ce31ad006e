"""cli/common.py: flags become overrides placed after the --set ones, so a flag always wins; --config
and --set parse the same on every command."""

import argparse

from musenet_jax.cli.common import (
    RUN_FLAGS,
    add_config_arguments,
    add_run_arguments,
    config_from_args,
    flag_overrides,
)


def _parser(**extra):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    parser.add_argument("--steps", type=int)
    return parser


def test_flags_follow_set_overrides_and_win():
    args = _parser().parse_args(["--set", "train.steps=5", "--set", "model.d_model=64", "--steps", "7"])
    flags = {"steps": "train.steps"}
    assert flag_overrides(args, flags) == ["train.steps=5", "model.d_model=64", "train.steps=7"]
    cfg = config_from_args(args, flags)
    assert cfg.train.steps == 7 and cfg.model.d_model == 64 and cfg.name == "tiny"


def test_flags_not_given_are_not_overrides():
    args = _parser().parse_args(["--set", "train.steps=5"])
    assert flag_overrides(args, {"steps": "train.steps"}) == ["train.steps=5"]
    assert config_from_args(args, {"steps": "train.steps"}).train.steps == 5
    assert flag_overrides(argparse.Namespace()) == []


def test_run_arguments_and_data_dir_flag(tmp_path):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(
        ["--checkpoint", str(tmp_path), "--data-dir", "/d", "--set", "sample.temperature=0.5"]
    )
    assert args.step == "latest"
    assert flag_overrides(args, RUN_FLAGS) == ["sample.temperature=0.5", "data.data_dir=/d"]
