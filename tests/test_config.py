"""Config loading: bundled names, overrides, and one-line errors that name the valid choices."""

import pytest

from musenet_jax.cli.main import main
from musenet_jax.config import bundled_config_names, config_from_dict, load_config
from musenet_jax.errors import UserError


def test_bundled_configs_load_and_are_frozen():
    assert {"tiny", "small", "musenet_72l"} <= set(bundled_config_names())
    big = load_config("musenet_72l")
    assert (big.model.n_layers, big.model.n_heads, big.model.context) == (72, 24, 4096)
    with pytest.raises(AttributeError):
        big.model.d_model = 3  # type: ignore[misc]


def test_overrides_are_typed():
    cfg = load_config("tiny", ["model.d_model=32", "train.learning_rate=1e-3", "model.patterns=fixed"])
    assert cfg.model.d_model == 32
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.model.patterns == ("fixed",)


def test_round_trips_through_dict():
    cfg = load_config("small", ["train.steps=7"])
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("tiny", ["model.d_modle=3"], "valid keys of model: d_model"),
        ("tiny", ["model.attention=flash"], "valid: pallas"),
        ("tinny", [], "valid: tiny"),
        ("tiny", ["model.n_layers=abc"], "expected int"),
        ("tiny", ["modl.d_model=1"], "valid: model"),
        ("tiny", ["d_model=1"], "expected section.key=value"),
    ],
)
def test_bad_keys_and_values_name_the_valid_choices(name, overrides, expected):
    with pytest.raises(UserError, match=expected):
        load_config(name, overrides)


def test_yaml_file_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  d_model: 48\n")
    cfg = load_config(str(path))
    assert (cfg.name, cfg.model.d_model) == ("mine", 48)


def test_cli_reports_a_bad_key_in_one_line(capsys):
    assert main(["vocab", "--set", "encoding.velocity_binz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "velocity_bins" in err
