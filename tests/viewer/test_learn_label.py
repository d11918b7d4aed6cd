"""The viewer shows what n2a-stream's learner does: a real stream with --learn feeds a real viewer."""
from __future__ import annotations

import pytest

from noise2atom.stem_sim import StemSimulator
from streamer.learner import LearnConfig

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


def test_learn_state_shows_in_the_status_bar_only_when_learning(qtbot, live_window):
    sim = StemSimulator(shape=(64, 64), seed=1)
    with live_window(learn=LearnConfig(min_frames=1000)) as (window, send):  # never swaps
        label = window.status_labels["learn"]
        assert not label.isVisible()
        send([sim.frame(seq).noisy for seq in range(3)], "s")
        qtbot.waitUntil(lambda: label.isVisible(), timeout=10_000)
        assert label.text().startswith("learn collecting: 0 swaps")
