"""The GUI thread's garbage collection (medtwin.gui.workers.MainThreadGC): generational, as
Python's automatic collection would be, not a full collection on every timer tick."""
from __future__ import annotations

import gc

import pytest

pytestmark = pytest.mark.gui


def test_timer_collects_only_the_generations_due(qtbot):
    from medtwin.gui.app import make_app
    from medtwin.gui.workers import MainThreadGC

    make_app()
    inst = MainThreadGC.install()  # switches automatic collection off
    seen: list[int] = []

    def record(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    try:
        gc.collect()  # every count back to zero
        seen.clear()
        inst.collect()
        assert seen == []  # nothing allocated since: nothing to do
        t0, t1, _ = gc.get_threshold()
        keep = [[i] for i in range(2 * t0)]  # past generation 0's threshold only
        assert gc.get_count()[0] >= t0 and gc.get_count()[1] < t1
        inst.collect()
        assert seen == [0]
        seen.clear()
        for _ in range(t1):  # generation 1 due: one collection of generation 1, not a full one
            keep.append([[j] for j in range(t0)])
            inst.collect()
        assert 1 in seen and 2 not in seen and len(keep) > t0
    finally:
        gc.callbacks.remove(record)
        MainThreadGC.uninstall()
