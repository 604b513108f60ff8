"""A mid-size CPU step runs on the faster lately of two training sessions (all threads, one): the chooser switches
only after timing the other session, and the weights never depend on which session ran."""

from __future__ import annotations

import numpy as np
import pytest

from onnxkit import zoo
from onnxkit.train.backends.onnx import artifacts, faster_of_two
from onnxkit.train.backends.onnx import session as session_module
from onnxkit.train.backends.onnx.faster_of_two import PROBE_RUNS, PROBE_SECONDS, FasterOfTwo
from onnxkit.train.problem import open_training


def _runs(chooser: FasterOfTwo, seconds: dict[int, float], count: int) -> list[int]:
    picked = []
    for _ in range(count):
        session = chooser.pick()
        picked.append(session)
        chooser.record(session, seconds[session])
    return picked


def test_the_other_session_is_timed_after_each_second_of_runs_and_takes_over_only_when_clearly_faster():
    chooser = FasterOfTwo()
    run = PROBE_SECONDS / 8  # runs of an eighth of the interval (exact in binary) before each timing
    picked = _runs(chooser, {0: run, 1: 0.95 * run}, 8 + PROBE_RUNS)  # 5% faster: not enough
    assert picked == [0] * 8 + [1] * PROBE_RUNS and chooser.current == 0
    picked = _runs(chooser, {0: 2 * run, 1: 0.95 * run}, 4 + PROBE_RUNS)  # the host's slow phase for two threads
    assert picked == [0] * 4 + [1] * PROBE_RUNS and chooser.current == 1
    picked = _runs(chooser, {0: 0.5 * run, 1: run}, 8 + PROBE_RUNS + 1)  # and back, after the next timing
    assert picked == [1] * 8 + [0] * PROBE_RUNS + [0] and chooser.current == 0


def test_one_fast_probe_run_does_not_switch():
    chooser = FasterOfTwo()
    _runs(chooser, {0: PROBE_SECONDS, 1: 0.0}, 1)  # a timing of session 1 begins
    for seconds in [0.1 * PROBE_SECONDS] + [5 * PROBE_SECONDS] * (PROBE_RUNS - 1):
        assert chooser.pick() == 1
        chooser.record(1, seconds)
    assert chooser.current == 0 and chooser.pick() == 0  # the medians compare, not one run


def _train(tmp_path, folder: str, *, paired: bool, model=None, rows=(64,) * 12, **options) -> object:
    """digits-cnn (or `model`, a digits-mlp) trained on random batches of `rows` rows each, with every step timed
    on two sessions (`paired`) or on one."""
    limit = 1 << 40 if paired else 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(artifacts, "ONE_THREAD_STEP", 0)
        patch.setattr(artifacts, "TIMED_THREADS_UP_TO", limit)
        session = open_training(model or zoo.build_model("digits-cnn"), tmp_path / folder, threads=2,
                                batch_size=rows[0], **options)
    rng = np.random.default_rng(3)
    for n in rows:
        shape = (n, 1, 8, 8) if model is None else (n, 64)
        session.train_step({"image" if model is None else "x": rng.normal(size=shape).astype(np.float32)},
                           rng.integers(0, 10, n))
        session.optimizer_step(1e-2)
    return session


def test_switching_sessions_every_few_steps_gives_the_weights_of_one_session(tmp_path, monkeypatch):
    monkeypatch.setattr(faster_of_two, "PROBE_SECONDS", 0.0)  # a timing after every run
    monkeypatch.setattr(faster_of_two, "PROBE_RUNS", 1)
    monkeypatch.setattr(faster_of_two, "SWITCH_BELOW", 1e9)  # the timed session always takes over
    for model, options in [(None, {}), (zoo.build_model("digits-mlp", dropout=0.3), {"grad_accumulation": 2})]:
        name = "cnn" if model is None else "mlp"
        paired = _train(tmp_path, f"{name}-paired", paired=True, model=model, **options)
        single = _train(tmp_path, f"{name}-single", paired=False, model=model, **options)
        assert len(paired._trains) == 2 and len(single._trains) == 1 and single._faster is None
        assert list(paired._same_bits.values()) == [True] and paired._faster.current == 1  # the sessions took turns
        got, want = paired.parameters(), single.parameters()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")


def test_batches_of_shapes_whose_bits_differ_stay_on_the_first_session(tmp_path, monkeypatch):
    # digits-cnn at batch 32: the one-thread session's loss 2.4e-7 from two threads'; each new batch shape is checked
    ran = []  # (session, rows) of each run
    run_on = session_module.OnnxSession._run_on

    def recorded(self, session, feeds, labels):
        ran.append((session, len(labels)))
        return run_on(self, session, feeds, labels)

    monkeypatch.setattr(session_module.OnnxSession, "_run_on", recorded)
    monkeypatch.setattr(faster_of_two, "PROBE_SECONDS", 0.0)
    monkeypatch.setattr(faster_of_two, "PROBE_RUNS", 1)
    monkeypatch.setattr(faster_of_two, "SWITCH_BELOW", 1e9)
    rows = (64, 64, 32, 64, 32, 64, 64, 32)
    paired = _train(tmp_path, "paired", paired=True, rows=rows)
    assert paired._same_bits == {((64, 1, 8, 8), (64,)): True, ((32, 1, 8, 8), (32,)): False}
    # the one-thread session's first run of each shape is a check after the same run on session 0 (a batch of 32
    # rows then runs on session 0 once more, its outputs the ones kept)
    assert ran[:3] == [(0, 64), (0, 64), (1, 64)] and ran[3:6] == [(0, 32), (1, 32), (0, 32)]
    assert ran.count((1, 32)) == 1 and ran.count((1, 64)) > 1  # 32 rows: never again on one thread
    single = _train(tmp_path, "single", paired=False, rows=rows)
    for key, value in single.parameters().items():
        np.testing.assert_array_equal(paired.parameters()[key], value, err_msg=key)


def test_a_mid_size_step_is_timed_on_one_thread_too_and_others_are_not(tmp_path):
    # digits-cnn does 51,840 forward multiply-adds a row: 3.3M at batch 64, past ONE_THREAD_STEP; 0.8M at 16
    for rows, threads, timed in ((64, 2, True), (16, 2, False), (64, 1, False), (1024, 2, False)):
        session = open_training(zoo.build_model("digits-cnn"), tmp_path / f"{rows}-{threads}", batch_size=rows,
                                threads=threads)
        assert (session._faster is not None) == timed and len(session._trains) == 1, (rows, threads)
