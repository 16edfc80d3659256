"""The CPU share (ldm_core/cpu.py): a generation takes the cores other programs leave it, and the
studio runs its generations on one long-lived thread."""
import threading

import pytest
import torch

from ldm_core import cpu as C


class FakeMachine:
    """/proc/stat and this process's times, advanced by hand: `tick(seconds, others, own)`."""

    def __init__(self, monkeypatch):
        self.wall = self.busy = self.own = 0.0
        monkeypatch.setattr(C, "_busy_seconds", lambda: (self.wall, self.busy))
        monkeypatch.setattr(C, "_own_seconds", lambda: self.own)
        monkeypatch.setattr(C.time, "monotonic", lambda: self.wall)

    def tick(self, seconds: float, others: float, own: float) -> None:
        """`others` and `own` in cores busy during those seconds."""
        self.wall += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own


@pytest.fixture
def threads_kept():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_the_cores_others_leave_free():
    share = C.CpuShare(most=2)
    share.cores = 2
    assert [share.threads(o) for o in (0.0, 0.3, 0.7, 1.0, 1.5, 3.0)] == [2, 2, 1, 1, 1, 1]
    share.cores, share.most = 8, 8
    assert [share.threads(o) for o in (0.0, 2.0, 6.9, 20.0)] == [8, 6, 1, 1]


def test_a_busy_machine_takes_threads_away_and_a_quiet_one_gives_them_back(monkeypatch, threads_kept):
    m = FakeMachine(monkeypatch)
    share = C.CpuShare(most=2, interval=0.2)
    share.cores = 2
    share.start()                        # the first look: no window yet
    assert share.current == 2
    m.tick(0.5, others=1.0, own=0.0)     # another program took a core while the studio was idle
    assert share.start() == 1 and torch.get_num_threads() == 1
    m.tick(0.1, others=0.0, own=1.0)
    assert share.update() == 1           # within the interval: not re-decided
    m.tick(0.2, others=0.0, own=1.0)     # the other program stopped
    assert share.update() == 2 and torch.get_num_threads() == 2 and share.others == pytest.approx(0.0)
    m.tick(0.3, others=0.9, own=1.3)     # it is back: 2 spinning threads leave it 0.7 of a core
    assert share.update() == 1


def test_the_step_callback_re_decides_and_still_calls_the_callers(monkeypatch, threads_kept):
    m = FakeMachine(monkeypatch)
    share = C.CpuShare(most=2, interval=0.2)
    share.cores = 2
    share.start()
    seen = []
    cb = share.wrap(lambda step: seen.append(step) or True)
    m.tick(0.3, others=2.0, own=0.5)
    assert cb("step 1") is True and seen == ["step 1"] and share.current == 1
    assert share.wrap(None)("step 2") is None


def test_without_proc_stat_nothing_changes(monkeypatch, threads_kept):
    monkeypatch.setattr(C, "_busy_seconds", lambda: None)
    share = C.CpuShare(most=2)
    assert not share.enabled and share.start() == 2
    cb = lambda step: False  # noqa: E731
    assert share.wrap(cb) is cb


def test_the_stack_runs_submitted_work_on_one_thread(stack):
    names = {stack.submit(lambda: threading.current_thread().name).result() for _ in range(3)}
    assert len(names) == 1 and names.pop().startswith("ldm-device")


def test_a_generation_runs_on_its_share_whatever_count_the_calling_thread_had():
    """A stack of one thread (one of two CPU stacks, pool.py) called from a thread that uses two (a CLI's
    main thread, a test's) still generates on one: the same sums, so the same pixels, as on its own thread."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        share = C.CpuShare(most=1)
        if not share.enabled:
            pytest.skip("no /proc/stat here")
        assert share.start() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
