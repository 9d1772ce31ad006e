"""The launch scripts' --dry-run: the exact commands a pod, a SLURM job or a local run would execute."""

from __future__ import annotations

import pathlib
import shlex
import subprocess

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "launch"


def _dry_run(script: str, *args: str) -> list[list[str]]:
    proc = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def test_tpu_pod_runs_setup_then_the_same_train_command_on_every_worker():
    train_args = ["--config", "musenet_72l", "--workdir", "/gcs/bucket/runs/a b", "--set", "train.steps=10"]
    commands = _dry_run(
        "tpu_pod.sh",
        "--dry-run",
        "--setup",
        "--tpu",
        "pod-1",
        "--zone",
        "us-east5-a",
        "--project",
        "p",
        "--",
        *train_args,
    )
    assert [c[:2] for c in commands] == [
        ["git", "-C"],
        ["gcloud", "compute"],
        ["gcloud", "compute"],
        ["gcloud", "compute"],
    ]
    scp, setup, train = commands[1:]
    for command in (scp, setup, train):
        assert "--worker=all" in command
        assert command[command.index("--zone") + 1] == "us-east5-a"
        assert command[command.index("--project") + 1] == "p"
    assert scp[4] == "scp"
    assert setup[4] == "ssh" and "pip install -q -e '.[tpu]'" in setup[setup.index("--command") + 1]
    remote = shlex.split(train[train.index("--command") + 1])
    assert remote[:3] == ["cd", "musenet-jax", "&&"]
    assert remote[3:6] == [".venv/bin/musenet-jax", "train", "--multihost"]
    assert remote[6:] == train_args  # quoting survives the remote shell


def test_tpu_pod_without_setup_only_trains_and_bad_usage_fails():
    commands = _dry_run(
        "tpu_pod.sh", "--dry-run", "--tpu", "pod-1", "--zone", "z", "--", "--workdir", "/gcs/b/w"
    )
    assert len(commands) == 1 and commands[0][4] == "ssh"
    proc = subprocess.run(
        ["bash", str(LAUNCH / "tpu_pod.sh"), "--dry-run", "--zone", "z"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_gpu_slurm_runs_one_multihost_task_per_gpu():
    (command,) = _dry_run("gpu_slurm.sbatch", "--dry-run", "--config", "small", "--workdir", "/shared/runs/x")
    assert command[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert command[2].endswith("/bin/musenet-jax")
    assert command[3:] == ["train", "--multihost", "--config", "small", "--workdir", "/shared/runs/x"]
    directives = [
        line for line in (LAUNCH / "gpu_slurm.sbatch").read_text().splitlines() if line.startswith("#SBATCH")
    ]
    assert "#SBATCH --signal=TERM@300" in directives  # time to checkpoint before the time limit


def test_local_multiprocess_gives_each_process_its_id_and_one_coordinator():
    commands = _dry_run("local_multiprocess.sh", "--dry-run", "3", "--config", "tiny", "--workdir", "w")
    assert len(commands) == 3
    coordinators = {c[c.index("--coordinator") + 1] for c in commands}
    assert len(coordinators) == 1 and next(iter(coordinators)).startswith("127.0.0.1:")
    assert [c[c.index("--process-id") + 1] for c in commands] == ["0", "1", "2"]
    for command in commands:
        assert command[command.index("--num-processes") + 1] == "3"
        assert "JAX_PLATFORMS=cpu" in command
        assert command[command.index("-m") + 1 : command.index("-m") + 3] == ["musenet_jax.cli.main", "train"]
