"""`musenet-jax plot`: a run's metrics.jsonl (written by the training loop's logger) -> training curve PNG."""

import math

import matplotlib.image

from musenet_jax.cli.main import main
from musenet_jax.train.metrics import MetricsLogger


def test_plot_writes_the_curve_and_reports_the_last_figures(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, start_step=0, total_steps=20, enabled=True, progress=False)
    for step in range(1, 21):
        logger.log(step, {"loss": 4.0 - 0.1 * step, "learning_rate": 1e-3})
        if step % 10 == 0:
            logger.log(step, {"val_bits_per_token": 5.0 - 0.1 * step})
    logger.close()
    out = tmp_path / "curve.png"
    assert main(["plot", str(tmp_path), "-o", str(out)]) == 0
    assert f"step 20: train {2.0 / math.log(2):.3f} bits/token, validation 3.000" in capsys.readouterr().out
    height, width, _ = matplotlib.image.imread(out).shape
    assert (width, height) == (840, 480)


def test_plot_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no training losses in" in err and "Traceback" not in err


def test_plot_of_several_runs_compares_validation_against_wall_time(tmp_path, capsys):
    for name, final in (("fast", 2.5), ("slow", 3.0)):
        logger = MetricsLogger(tmp_path / name, start_step=0, total_steps=10, enabled=True, progress=False)
        for step in (5, 10):
            logger.log(step, {"loss": 3.0})
            logger.log(step, {"val_bits_per_token": final + (10 - step) / 10})
        logger.close()
    out = tmp_path / "recipes.png"
    assert main(["plot", str(tmp_path / "fast"), str(tmp_path / "slow"), "-o", str(out)]) == 0
    assert "fast 2.500, slow 3.000" in capsys.readouterr().out
    assert matplotlib.image.imread(out).shape[:2] == (480, 840)
