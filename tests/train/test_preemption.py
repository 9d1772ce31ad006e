"""train/preemption.py: the SIGTERM/SIGINT flag and the non-finite-loss guard, on their own.

The loop relies on StopRequest catching a real signal without dying and handing the old handlers back,
and on NonFiniteGuard stopping a diverged run with a message that says where the good weights are."""

import os
import signal

import pytest

from musenet_jax.errors import UserError
from musenet_jax.train.preemption import STOP_SIGNALS, NonFiniteGuard, StopRequest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_request_records_a_real_signal_and_restores_handlers(sig):
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    request = StopRequest()
    assert not request.agreed()
    with request.installed():
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill returns
        assert request.signal_name == sig.name
        assert request.agreed()
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_stop_request_restores_handlers_after_an_exception():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), StopRequest().installed():
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) is before


def test_guard_stops_after_the_limit_naming_the_last_checkpoint():
    guard = NonFiniteGuard(limit=3)
    guard.update(1, step=10, last_checkpoint=8, checkpoint_dir="/w/checkpoints")
    guard.update(1, step=11, last_checkpoint=8, checkpoint_dir="/w/checkpoints")
    with pytest.raises(UserError) as err:
        guard.update(1, step=12, last_checkpoint=8, checkpoint_dir="/w/checkpoints")
    message = str(err.value)
    assert "\n" not in message
    assert "step 12" in message and "step 8 in /w/checkpoints" in message
    assert "train.max_consecutive_nonfinite=3" in message


def test_guard_resets_on_a_finite_step_and_counts_the_total():
    guard = NonFiniteGuard(limit=2)
    for step, skipped in enumerate([1, 0, 1, 0, 1, 0]):
        guard.update(skipped, step=step, last_checkpoint=None, checkpoint_dir="/w")
    assert guard.consecutive == 0 and guard.total == 3


def test_guard_without_a_checkpoint_says_so():
    guard = NonFiniteGuard(limit=1)
    with pytest.raises(UserError, match="no checkpoint was saved yet"):
        guard.update(1, step=0, last_checkpoint=None, checkpoint_dir="/w")


def test_guard_limit_zero_never_stops():
    guard = NonFiniteGuard(limit=0)
    for step in range(50):
        guard.update(1, step=step, last_checkpoint=None, checkpoint_dir="/w")
    assert guard.consecutive == 50
