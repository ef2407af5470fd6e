"""The benches' CPU and memory readings of local processes (``tianyan.procstat``)."""

from __future__ import annotations

import os
import subprocess
import sys

from tianyan.procstat import cpu_s, peak_rss_kb, tree_cpu_s

_BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"


def test_a_childs_cpu_counts_in_its_parents_tree_alive_and_reaped() -> None:
    me = os.getpid()
    before_tree, before_own = tree_cpu_s(me), cpu_s([me])
    child = subprocess.Popen([sys.executable, "-c", _BURN + "input()"], stdin=subprocess.PIPE)
    try:
        # Alive: counted among the children (its interpreter start-up and the 0.5 s burn).
        while cpu_s([child.pid]) < 0.5:
            assert child.poll() is None, "the child ended before it had burnt 0.5 s"
        alive = tree_cpu_s(me) - before_tree
    finally:
        child.communicate(b"\n")
    reaped = tree_cpu_s(me) - before_tree
    own = cpu_s([me]) - before_own
    assert alive - own >= 0.45
    assert reaped - own >= 0.45  # moved to this process's cutime when it was reaped
    assert reaped >= alive - 0.05


def test_a_process_that_is_gone_counts_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_s([child.pid]) == 0.0
    assert tree_cpu_s(child.pid) == 0.0
    assert peak_rss_kb(child.pid) == 0
    assert peak_rss_kb(os.getpid()) > 1_000
