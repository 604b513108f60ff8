"""Data-parallel training over MPI: 2 ranks give 1 process's weights, resume, and a failing or
killed rank ends the run with a clear error (mpiexec from the mpich wheel, 2 ranks)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit.errors import OnnxkitError

pytest.importorskip("mpi4py")

from onnxkit import mpi_environment  # noqa: E402
from onnxkit.train import distributed  # noqa: E402
from onnxkit.train.launch import STOP_GRACE_S, find_mpiexec, launch, launch_training  # noqa: E402
from onnxkit.train.run_directory import RunDirectory  # noqa: E402

# digits-cnn, dropout off, data in order: 1,079 training rows make 17 batches of 64 per epoch
SETTINGS = dict(steps=30, batch_size=64, shuffle=False, dropout=False, optimizer="adamw", lr=0.01)
FLAGS = ["--steps", "30", "--batch-size", "64", "--no-shuffle", "--no-dropout", "--optimizer", "adamw", "--lr",
         "0.01"]  # the same as SETTINGS
SCRIPT = """\
import os, signal, sys, time
from onnxkit.errors import OnnxkitError
from onnxkit.train import TrainingInterrupted, fit
from onnxkit.train.callbacks import Callback
from onnxkit.mpi_environment import rank

ACTION, AT_STEP = sys.argv[3], int(sys.argv[4])
STEP = [0]

if ACTION == "kill":  # the first checkpoint after epoch 1, as in a run longer than a second
    from onnxkit.train import trainer
    trainer.FIRST_CHECKPOINT_SECONDS = 0.0

if ACTION == "late-interrupt":  # SIGINT to rank 1 just after the ranks agreed not to stop at step AT_STEP
    from onnxkit.train import distributed
    agree = distributed.World.allreduce

    def allreduce(self, values, what, **options):
        agreed = agree(self, values, what, **options)
        if what == "a stop request" and self.rank == 1 and STEP[0] == AT_STEP:
            os.kill(os.getpid(), signal.SIGINT)
        return agreed

    distributed.World.allreduce = allreduce

class Fail(Callback):
    def on_step_end(self, trainer, record):
        STEP[0] = record["step"]
        if ACTION == "late-interrupt":
            return
        if ACTION == "slow" and rank() == 1 and record["step"] > AT_STEP:
            time.sleep(0.2)  # a long run from here on
        if rank() != 1 or record["step"] != AT_STEP:
            return
        with open(sys.argv[5], "w") as f:
            f.write(str(time.time()))
        if ACTION in ("kill", "interrupt"):
            os.kill(os.getpid(), signal.SIGKILL if ACTION == "kill" else signal.SIGINT)
            return
        if ACTION == "raise":
            raise OnnxkitError("rank 1 failed on purpose")
        if ACTION == "stop":
            trainer.stop_training = True
            return
        if ACTION == "slow":
            return
        time.sleep(600)  # hang

try:
    fit(sys.argv[1], "digits-images", sys.argv[2], callbacks=[Fail()], **SETTINGS)
except TrainingInterrupted as stop:  # where each rank says the run and its checkpoint are
    with open(f"{sys.argv[5]}.{rank()}", "w") as f:
        f.write(f"{stop.run_dir} {stop.checkpoint}")
    sys.exit(130)
if ACTION == "linger":  # a script that goes on for a while after training (rank 0 has written the run's last state)
    if rank() == 0:
        with open(sys.argv[5], "w") as f:
            f.write(str(time.time()))
    time.sleep(3)
"""


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _assert_same_weights(got: Path, want: Path) -> None:
    a, b = _weights(got), _weights(want)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """digits-cnn and the model one process trains from it (the `--workers 1` result)."""
    from onnxkit.train import fit
    from onnxkit.zoo import build_model

    folder = tmp_path_factory.mktemp("dp")
    model = folder / "cnn.onnx"
    onnx.save(build_model("digits-cnn"), str(model))
    result = fit(model, "digits-images", folder / "one", **SETTINGS)
    assert json.loads((folder / "one" / "run.json").read_text())["result"]["steps"] == 30
    return model, result.model_path


def _script(tmp_path: Path, action: str, step: int) -> tuple[list[str], Path]:
    script = tmp_path / "train_and_fail.py"
    script.write_text(SCRIPT.replace("**SETTINGS", "**" + repr(SETTINGS)))
    marker = tmp_path / "failed-at"
    return [str(script), action, str(step), str(marker)], marker


def _onnxkit_train(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "onnxkit", "train", *arguments, "--workers", "2"], capture_output=True,
                          text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done


def test_two_workers_train_the_weights_of_one_process(reference: tuple[Path, Path], tmp_path: Path) -> None:
    model, want = reference
    run = tmp_path / "runs" / "cnn"  # with no -o, in runs/MODEL: chosen once, for every rank
    done = _onnxkit_train(str(model), "digits-images", *FLAGS, cwd=tmp_path)
    _assert_same_weights(run / "model.onnx", want)
    assert done.stdout.count("wrote ") == 1 and "runs/cnn/model.onnx" in done.stdout  # worker 0 alone reports
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["cnn"]
    assert json.loads((run / "run.json").read_text())["result"]["steps"] == 30
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "step"] == list(range(1, 31))


def test_uneven_shares_with_gradient_accumulation_match_one_process(reference: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    from onnxkit.train import fit

    model, _ = reference
    settings = dict(SETTINGS, steps=8, batch_size=45, grad_accumulation=3)  # shares of 22 and 23 rows
    want = fit(model, "digits-images", tmp_path / "one", **settings).model_path
    flags = ["--steps", "8", "--batch-size", "45", "--grad-accum", "3", *FLAGS[4:]]
    _onnxkit_train(str(model), "--data", "digits-images", "-o", str(tmp_path / "two"), *flags)
    _assert_same_weights(tmp_path / "two" / "model.onnx", want)


def _batchnorm_mlp(path: Path) -> Path:
    from onnxkit import nn

    nn.manual_seed(0)
    mlp = nn.Sequential([nn.BatchNorm1d(64), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)])
    onnx.save(nn.build(mlp, {"x": nn.Input(["batch", 64])}, output_names=["logits"]), str(path))
    return path


def test_batchnorm_statistics_are_averaged_over_workers(tmp_path: Path) -> None:
    """BatchNorm normalises each worker's share with the share's statistics (as DDP does), so two
    workers train what one process trains in micro-batches of one share each (gradient accumulation),
    and the running statistics are the mean over the shares' (for a BatchNorm on the raw input,
    numpy gives them from the data alone)."""
    from onnxkit.data import load_dataset
    from onnxkit.train import fit

    model = _batchnorm_mlp(tmp_path / "bn.onnx")
    steps, common = 3, dict(shuffle=False, dropout=False, optimizer="adamw", lr=0.01)
    _onnxkit_train(str(model), "--data", "digits", "-o", str(tmp_path / "two"), "--steps", str(steps),
                   "--batch-size", "64", "--no-shuffle", "--no-dropout", "--optimizer", "adamw", "--lr", "0.01")
    one = fit(model, "digits", tmp_path / "one", steps=steps, batch_size=32, grad_accumulation=2, **common)
    got, want = _weights(tmp_path / "two" / "model.onnx"), _weights(one.model_path)
    stats = {name for name in got if "running" in name}
    assert stats == {"0.running_mean", "0.running_var", "2.running_mean", "2.running_var"}
    for name in got.keys() - stats:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5, err_msg=name)
    x = load_dataset("digits").train.inputs["x"].astype(np.float64)
    mean, var, var_of_worker_0 = np.zeros(64), np.ones(64), np.ones(64)
    for step in range(steps):  # ONNX momentum 0.9 keeps 0.9 of the running value; variances are unbiased (PyTorch)
        shares = x[64 * step : 64 * step + 64].reshape(2, 32, 64)
        mean, var = 0.9 * mean + 0.1 * shares.mean(1).mean(0), 0.9 * var + 0.1 * shares.var(1, ddof=1).mean(0)
        var_of_worker_0 = 0.9 * var_of_worker_0 + 0.1 * shares[0].var(0, ddof=1)
    np.testing.assert_allclose(got["0.running_mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["0.running_var"], var, rtol=1e-5, atol=1e-5)
    assert np.abs(var - var_of_worker_0).max() > 1e-3  # unaveraged statistics would fail the check above
    assert not np.allclose(got["2.running_var"], 1)  # the hidden BatchNorm's statistics moved too


def test_a_short_last_batch_trains_as_one_process_cuts_it_into_micro_batches(tmp_path: Path) -> None:
    """digits' 1,079 rows leave a last batch of 55 at step 17: two workers take rows 0-31 and 32-54 of it, as
    one process with --batch-size 32 --grad-accum 2 does, each weighted by its rows (before, 27 and 28 rows,
    and 32 and 23 each weighted 1/2: 2.7e-3 apart at step 18). SGD: AdamW turns the float noise of the
    gradients BatchNorm zeroes (a bias before it) into steps of up to 2e-4."""
    from onnxkit.train import fit

    model = _batchnorm_mlp(tmp_path / "bn.onnx")
    _onnxkit_train(str(model), "--data", "digits", "-o", str(tmp_path / "two"), "--steps", "18", "--batch-size", "64",
                   "--no-shuffle", "--no-dropout", "--optimizer", "sgd", "--lr", "0.1")
    one = fit(model, "digits", tmp_path / "one", steps=18, batch_size=32, grad_accumulation=2, shuffle=False,
              dropout=False, optimizer="sgd", lr=0.1)
    got, want = _weights(tmp_path / "two" / "model.onnx"), _weights(one.model_path)
    for name in got.keys() - {"0.running_mean", "0.running_var", "2.running_mean", "2.running_var"}:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)


TINY_BATCHNORM = """\
import sys
import numpy as np
import onnx
from onnxkit import nn
from onnxkit.data import Dataset, Split
from onnxkit.train import fit

nn.manual_seed(0)
model = nn.build(nn.Sequential([nn.BatchNorm1d(4), nn.Linear(4, 3)]), {"x": nn.Input(["batch", 4])},
                 output_names=["logits"])
x = np.random.default_rng(0).normal(2, 3, size=(10, 4)).astype(np.float32)
y = np.arange(10) % 3
empty = Split("empty", {"x": x[:0]}, y[:0])
batch, accumulation = int(sys.argv[2]), int(sys.argv[3])
fit(model, Dataset("tiny", Split("train", {"x": x}, y), empty, empty), sys.argv[1], steps=2, batch_size=batch,
    grad_accumulation=accumulation, shuffle=False, dropout=False, optimizer="sgd", lr=0.1, quiet=True)
"""


def test_a_worker_with_no_rows_of_a_batch_leaves_the_batchnorm_statistics_alone(tmp_path: Path) -> None:
    """10 rows in batches of 6 on 3 workers: shares of 2, 2, 2 rows, then 2, 2 and none. The running statistics
    are the mean over the workers that had rows (before, worker 2's statistics of the one row it runs with
    weight 0 were averaged in: the running mean 0.11 off, the variance 0.16), and the weights those of one
    process taking the same micro-batches (--batch-size 2 --grad-accum 3)."""
    script = tmp_path / "tiny_batchnorm.py"
    script.write_text(TINY_BATCHNORM)
    assert launch(3, [str(script), str(tmp_path / "three"), "6", "1"], run_dir=tmp_path / "three") == 0
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "2", "3"], check=True, capture_output=True)
    got, want = _weights(tmp_path / "three" / "model.onnx"), _weights(tmp_path / "one" / "model.onnx")
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    x = np.random.default_rng(0).normal(2, 3, size=(10, 4))
    mean, var = np.zeros(4), np.ones(4)
    for shares in ([x[0:2], x[2:4], x[4:6]], [x[6:8], x[8:10]]):  # ONNX momentum 0.9; unbiased variances
        mean = 0.9 * mean + 0.1 * np.mean([s.mean(0) for s in shares], 0)
        var = 0.9 * var + 0.1 * np.mean([s.var(0, ddof=1) for s in shares], 0)
    np.testing.assert_allclose(got["0.running_mean"], mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["0.running_var"], var, rtol=0, atol=1e-6)


def test_killed_worker_ends_the_run_and_it_resumes_on_two_workers(reference: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    model, want = reference
    run = tmp_path / "run"
    arguments, marker = _script(tmp_path, "kill", 25)  # after the first checkpoint (end of epoch 1, step 17)
    with pytest.raises(OnnxkitError, match="a worker stopped without reporting an error") as error:
        launch(2, [*arguments[:1], str(model), str(run), *arguments[1:]], run_dir=run)
    assert time.time() - float(marker.read_text()) < 30
    assert "continue with: onnxkit train --resume" in str(error.value)
    from onnxkit.train.backends import get_backend

    saved = get_backend("onnx").checkpoint_parameters(RunDirectory(run).last_checkpoint)  # intact, loads
    assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 17
    assert saved.keys() == _weights(want).keys()
    _onnxkit_train("--resume", str(run))
    _assert_same_weights(run / "model.onnx", want)


def test_ctrl_c_on_one_worker_stops_all_after_the_same_step(reference: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = reference
    run = tmp_path / "run"
    arguments, marker = _script(tmp_path, "interrupt", 20)  # only worker 1 gets SIGINT, in step 20
    assert launch(2, [*arguments[:1], str(model), str(run), *arguments[1:]], run_dir=run) == 130
    assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 20  # worker 0 checkpointed it
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    checkpoint = RunDirectory(run).last_checkpoint  # worker 1's stop named its scratch copy, gone as it exited
    assert [Path(f"{marker}.{r}").read_text() for r in range(2)] == [f"{run} {checkpoint}"] * 2


def test_ctrl_c_reaching_one_worker_just_after_the_ranks_agreed_waits_for_the_next_agreement(
        reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank stopped on its own flag: worker 1, signalled after the step's agreement, stopped while worker 0
    went on to the next step's all-reduce and waited for it until the timeout (exit 1, no checkpoint)."""
    model, _ = reference
    run = tmp_path / "run"
    monkeypatch.setenv("ONNXKIT_WORKER_TIMEOUT", "10")
    arguments, _ = _script(tmp_path, "late-interrupt", 20)
    assert launch(2, [*arguments[:1], str(model), str(run), *arguments[1:]], run_dir=run) == 130
    assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 21  # both stopped after step 21


def test_a_callback_stopping_one_worker_stops_all_after_the_same_step(reference: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    model, _ = reference
    run = tmp_path / "run"
    arguments, _ = _script(tmp_path, "stop", 5)  # only worker 1's callback asks to stop, in step 5
    assert launch(2, [*arguments[:1], str(model), str(run), *arguments[1:]], run_dir=run) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["result"]["steps"] == 5 and info["stopped_early"] is True and info["status"] == "completed"


def _kill_launcher_at_marker(model: Path, tmp_path: Path, action: str, step: int) -> tuple[Path, Path]:
    """Start `launch(2, ...)` of the script with `action` in a process of its own (its temporary folder under
    tmp_path), kill -9 it once the script wrote its marker; the run folder and the temporary folder."""
    run, temporary = tmp_path / "run", tmp_path / "tmp"
    temporary.mkdir()
    arguments, marker = _script(tmp_path, action, step)
    arguments = [*arguments[:1], str(model), str(run), *arguments[1:]]
    threads = "import threading, time; [threading.Thread(target=time.sleep, args=(60,), daemon=True).start() " \
              "for _ in range(4)]; "  # as onnxruntime's and OpenBLAS's imports start them
    code = f"{threads}from onnxkit.train.launch import launch; launch(2, {arguments!r})"
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "TMPDIR": str(temporary)})
    try:
        for _ in range(600):
            if marker.is_file():
                break
            time.sleep(0.05)
        launcher.kill()
    finally:
        launcher.wait()
    return run, temporary


def _assert_removed(temporary: Path) -> None:
    for _ in range(600):  # the ranks exit just after the checkpoint (one took over 10 s on a loaded 2-core host)
        if not any(temporary.glob("onnxkit-*")):
            break
        time.sleep(0.05)
    assert not any(temporary.glob("onnxkit-*")), list(temporary.rglob("*"))


def test_workers_stop_with_a_checkpoint_when_the_launcher_is_killed(reference: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    """kill -9 of `onnxkit train --workers` (or a closed terminal) left mpiexec and the workers training on
    with nobody to report to, holding the run's lock (or, once they wrote output, killed by the broken
    pipe before a checkpoint); they now stop as after a SIGTERM. A launcher with threads sent mpiexec a
    parent-death SIGTERM for each, and the second killed rank 0 before its checkpoint (2 runs in 3). The launcher's
    temporary folder (the ranks' output) was left behind: 34 of them had gathered in /tmp."""
    model, _ = reference
    run, temporary = _kill_launcher_at_marker(model, tmp_path, "slow", 3)  # 27 more steps of 0.2 s: about 6 s
    for _ in range(900):  # up to 45 s: the workers' SIGTERM checkpoint, on a loaded 2-core machine
        status = json.loads((run / "run.json").read_text())["status"]
        if status != "running":
            break
        time.sleep(0.05)
    assert status == "interrupted"  # not "completed" by orphaned workers
    assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] < 30
    _assert_removed(temporary)


def test_ranks_past_training_remove_their_folders_when_the_launcher_is_killed(reference: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    """A rank whose training had ended (no SIGTERM handler left) got its watchdog's SIGTERM, which ended it at once,
    skipping its atexit functions (and mpiexec then SIGKILLed the other): rank 1's scratch folder and the launcher's
    stayed. Cleaning up and leaving with os._exit(143) instead still lost rank 1's folder under load, 8 runs in 8:
    a rank gone without MPI_Finalize is killed with the rest. Such a rank now ends on its own, as it would have."""
    model, _ = reference
    run, temporary = _kill_launcher_at_marker(model, tmp_path, "linger", 0)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    _assert_removed(temporary)


KILLED_AT_START = """\
import os, signal, sys
from onnxkit.train import distributed, fit

opened = distributed.World.open_session

def open_session(self, setup, resuming):  # worker 0 builds the artifacts meanwhile, then waits for worker 1
    if self.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return opened(self, setup, resuming)

distributed.World.open_session = open_session
fit(sys.argv[1], "digits", sys.argv[2], steps=2, quiet=True)
"""


def test_a_worker_killed_at_start_leaves_nothing_the_run_made(tmp_path: Path) -> None:
    """It left artifacts/, checkpoints/ and run.lock (worker 0 died with it, before run.json); now the folder goes
    when the run made it, only what the run added when it was there, and a user's earlier run stays as it was."""
    from onnxkit import nn
    from onnxkit.train import fit

    script, model = tmp_path / "killed_at_start.py", tmp_path / "linear.onnx"
    script.write_text(KILLED_AT_START)
    nn.manual_seed(0)
    onnx.save(nn.build(nn.Linear(64, 10), {"x": nn.Input(["batch", 64])}, output_names=["logits"]), str(model))
    fresh, mine, done = tmp_path / "fresh", tmp_path / "mine", tmp_path / "done"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    fit(model, "digits", done, steps=2)
    earlier = {p: p.read_bytes() for p in done.rglob("*") if p.is_file()}
    for run in (fresh, mine):
        with pytest.raises(OnnxkitError, match="a worker stopped without reporting an error"):
            launch(2, [str(script), str(model), str(run)], run_dir=run, new_run=True)
    assert not fresh.exists() and [p.name for p in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(OnnxkitError, match="already holds a finished training run"):
        launch(2, [str(script), str(model), str(done)], run_dir=done, new_run=True)
    assert {p: p.read_bytes() for p in done.rglob("*") if p.is_file()} == earlier


def test_every_worker_returns_the_run_worker_0_wrote(tmp_path: Path) -> None:
    """fit's result on worker 1 named model.onnx in its scratch copy of the run, deleted as it exited."""
    from onnxkit import nn

    model, run = tmp_path / "linear.onnx", tmp_path / "run"
    nn.manual_seed(0)
    onnx.save(nn.build(nn.Linear(64, 10), {"x": nn.Input(["batch", 64])}, output_names=["logits"]), str(model))
    script = tmp_path / "result.py"
    script.write_text("import json, sys\nfrom onnxkit.train import fit\nfrom onnxkit.mpi_environment import rank\n"
                      "r = fit(sys.argv[1], 'digits', sys.argv[2], steps=2)\n"
                      "json.dump([str(r.run_dir), str(r.model_path), r.steps], open(f'{sys.argv[2]}.{rank()}', 'w'))")
    assert launch(2, [str(script), str(model), str(run)], run_dir=run) == 0
    results = [json.loads(Path(f"{run}.{r}").read_text()) for r in range(2)]
    assert results == [[str(run), str(run / "model.onnx"), 2]] * 2 and (run / "model.onnx").is_file()


@pytest.mark.parametrize("action", ["raise", "hang"])
def test_failing_or_hung_worker_stops_every_worker_with_its_error(reference: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   action: str) -> None:
    model, _ = reference
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "3")
    arguments, marker = _script(tmp_path, action, 3)
    message = "worker 1 of 2: rank 1 failed on purpose" if action == "raise" else \
        "worker 0 of 2: waited more than 3 s for the other workers"
    exported = set(Path("/tmp").glob("hydra_hwloc_xmlfile_*"))  # Hydra's topology files, fixed in /tmp
    with pytest.raises(OnnxkitError, match=message):
        launch(2, [*arguments[:1], str(model), str(tmp_path / "run"), *arguments[1:]])
    assert time.time() - float(marker.read_text()) < 30
    assert set(Path("/tmp").glob("hydra_hwloc_xmlfile_*")) <= exported  # a rank's MPI_Abort left one behind


def test_workers_refuse_a_backend_that_cannot_set_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxkit.train import backends

    distributed.check_backend("onnx")
    monkeypatch.setattr(backends, "get_backend", lambda name: SimpleNamespace(sets_gradients=False))  # ORT-training's
    with pytest.raises(OnnxkitError, match="the ort-training backend cannot set gradients"):
        distributed.check_backend("ort-training")


def test_workers_refuse_ort_training_before_asking_to_install_it(tmp_path: Path) -> None:
    # without onnxruntime-training the error said to install it (a Python environment of its own), after which
    # --workers would refuse the backend anyway
    done = subprocess.run([sys.executable, "-m", "onnxkit", "train", "iris.onnx", "--data", "iris", "--backend",
                           "ort-training", "-o", str(tmp_path / "run"), "--workers", "2"], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stderr) == (1, "error: the ort-training backend cannot set gradients, which "
                                                 "data-parallel training needs; train on several workers with "
                                                 "--backend onnx, or on one without --workers\n")
    assert not (tmp_path / "run").exists()


def test_bad_worker_options_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OnnxkitError, match="at least 1"):
        launch(0, ["-c", "pass"])
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(OnnxkitError, match=f"{4 * cores + 1} workers on this machine's {cores} cores"):
        launch(4 * cores + 1, ["-c", "pass"])  # --workers 1000 on 2 cores froze the machine for 15 minutes
    for timeout in ("abc", "0", "-5", "nan"):  # "abc": a traceback from each rank, then "a worker stopped without
        # reporting an error (... killed, or out of memory)"; 0 and below aborted any collective slower than 0.5 s
        monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, timeout)
        with pytest.raises(OnnxkitError, match=rf"^\$ONNXKIT_WORKER_TIMEOUT must be the seconds a worker waits for the "
                                               rf"others, above 0; got '{timeout}' \(unset it for 30\)$"):
            launch(2, ["-c", "pass"])
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "2.5")
    assert distributed.worker_timeout() == 2.5
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with pytest.raises(OnnxkitError, match="from Python, run your script with mpiexec"):
        launch_training(2, "run", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(OnnxkitError, match=r"onnxkit\[distributed\]"):
        find_mpiexec()


def test_each_rank_takes_a_gpu_of_its_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 machines x 4 ranks, 2 GPUs each: local ranks 0..3 on each machine
    assert [distributed.rank_device("cuda", r % 4, 2) for r in range(8)] == ["cuda:0", "cuda:1"] * 4
    assert distributed.rank_device("auto", 3, 4) == "cuda:3"  # auto where CUDA is usable means CUDA
    assert [distributed.rank_device(d, 3, 2) for d in ("cuda:1", "CUDA:0", "cpu")] == ["cuda:1", "CUDA:0", "cpu"]
    assert [distributed.rank_device(d, 1, 0) for d in ("auto", "cuda")] == ["auto", "cuda"]  # no GPU: the backend says
    for name in (*mpi_environment.LOCAL_RANK_VARIABLES, *mpi_environment.RANK_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_RANK", "5")
    assert mpi_environment.local_rank() == 5  # no local rank from the launcher: the world rank
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    assert mpi_environment.local_rank() == 1
    monkeypatch.setenv("MPI_LOCALRANKID", "2")  # MPICH's Hydra
    assert mpi_environment.local_rank() == 2


def test_batches_split_into_contiguous_shares() -> None:
    for rows in (1, 7, 64, 65):
        for size in (2, 3):
            shares = [distributed.shard(rows, r, size) for r in range(size)]
            assert shares[0][0] == 0 and shares[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
            assert max(hi - lo for lo, hi in shares) - min(hi - lo for lo, hi in shares) <= 1
    # a short last batch is cut where a full one is: one process's micro-batches of batch_size / size
    assert [distributed.shard(55, r, 2, 64) for r in range(2)] == [(0, 32), (32, 55)]
    assert [distributed.shard(4, r, 3, 6) for r in range(3)] == [(0, 2), (2, 4), (4, 4)]


def test_each_worker_draws_its_own_dropout_windows() -> None:
    from onnxkit.train.backends.onnx.dropout import DropoutTables

    alone, worker = DropoutTables([0.1, 0.2], seed=0, count=3), DropoutTables([0.1, 0.2], seed=0, count=3)
    assert alone.stream == 0  # a lone process's windows are worker 0's
    worker.stream = 1
    assert not np.array_equal(worker.starts(5, 1), alone.starts(5, 1))
    assert [t.tobytes() for t in worker.tables] == [t.tobytes() for t in alone.tables]  # the same tables


def test_outside_mpi_there_is_no_world() -> None:
    assert os.environ.get("PMI_SIZE") is None and distributed.current_world() is None


@pytest.mark.parametrize("after", [0.2, 0.35, 0.5, 0.7, 1.0])
def test_ctrl_c_to_the_launcher_at_any_moment_stops_with_130(reference: tuple[Path, Path], tmp_path: Path,
                                                              after: float) -> None:
    """Early on, rank 0 could stop (Ctrl-C reached it before fit) while rank 1, in MPI's blocking broadcast, could not
    run its handler and spun forever; a stop inside fit before training began exited 1 ('worker 0 of 2:
    KeyboardInterrupt'); one during onnxruntime's import said onnxruntime was not installed. A rank that stopped
    before joining the MPI world exited while the other waited in MPI_Init, deaf to its own stop, until the launcher
    killed it 20 s later (2 of 48 runs under load); and each rank wrote its own 'error: stopped by SIGINT' line."""
    model, _ = reference
    command = [sys.executable, "-m", "onnxkit", "train", str(model), "--data", "digits-images", "--epochs", "300",
               "--workers", "2", "-o", str(tmp_path / "run")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        while process.poll() is None and not children.read_text().split():  # mpiexec has started: `after` from then
            time.sleep(0.01)
        time.sleep(after)
        process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        out, err = process.communicate(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if process.poll() is None:  # leave no job behind (its mpiexec dies with it)
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert took < STOP_GRACE_S / 2, (took, out + err)  # no rank left waiting until the launcher kills the job
    last = (out + err).strip().splitlines()[-1]
    assert last == "error: stopped by SIGINT" or last.startswith("interrupted in epoch"), out + err
    assert (out + err).count("stopped by") <= 1 and "\n\n" not in err, out + err


def test_a_malformed_command_line_is_one_usage_error_before_any_worker_starts(tmp_path: Path) -> None:
    # each rank printed the error, then the launcher "a worker stopped without reporting an error ... killed, or
    # out of memory", exit 1
    from onnxkit import zoo

    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), str(model))
    for flags, message in [(("--optimizer", "sgd", "--betas", "0.9", "0.99"), "sgd has no option '--betas'"),
                           (("--lora-alpha", "4"), "need --lora-rank R"),
                           (("--max-length", "64"), "carries no tokenizer: give one with --tokenizer")]:
        done = subprocess.run([sys.executable, "-m", "onnxkit", "train", str(model), "--data", "iris", "-o",
                               str(tmp_path / "run"), *flags, "--workers", "2"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        assert not (tmp_path / "run").exists()


def test_a_workers_error_names_the_commands_flags(tmp_path: Path) -> None:
    # an error a rank met named the library's parameter: "train_only 'nothing*' matches no parameter"
    from onnxkit import zoo

    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), str(model))
    done = subprocess.run([sys.executable, "-m", "onnxkit", "train", str(model), "--data", "iris", "-o",
                           str(tmp_path / "run"), "--train-only", "nothing*", "--workers", "2"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "--train-only 'nothing*' matches no parameter" in done.stderr


@pytest.mark.parametrize(("variable", "value", "reason"),
                         [("HYDRA_HOST_FILE", "/no/such/hosts", "unable to open host file"),
                          ("HYDRA_IFACE", "nosuch0", "unable to find interface")])
def test_mpiexec_that_cannot_start_the_workers_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        variable: str, value: str, reason: str) -> None:
    # a bad MPI setting in the environment said "a worker stopped without reporting an error (mpiexec exit status
    # 255: killed, or out of memory) ... No checkpoint had been written in run yet; start the run again"
    monkeypatch.setenv(variable, value)
    with pytest.raises(OnnxkitError, match=f"^mpiexec could not run the workers: {reason}.*HYDRA_"):
        launch(2, ["-c", "pass"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_on_a_terminal_workers_show_the_progress_bar_of_one_process(tmp_path: Path) -> None:
    # rank 0 wrote to a file the launcher relays, so it drew no bar on a terminal, and the relay passed on whole
    # lines only; train's last line, on stdout, came before the epochs' and test lines on stderr
    import pty

    from onnxkit import zoo

    model = tmp_path / "iris.onnx"
    onnx.save(zoo.build_model("iris-mlp"), str(model))
    terminal, end = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "onnxkit", "train", str(model), "--data", "iris", "--epochs",
                                "3", "-o", str(tmp_path / "run"), "--workers", "2"], stdout=end, stderr=end)
    os.close(end)
    output = b""
    try:
        while chunk := os.read(terminal, 65536):
            output += chunk
    except OSError:  # every writer closed the terminal
        pass
    finally:
        os.close(terminal)
        assert process.wait(timeout=120) == 0, output
    text = output.decode()
    assert text.count("\repoch 3/3 [########################] 6/6 loss ") == 1, text
    assert text.splitlines()[-1].startswith("wrote "), text


def test_ctrl_c_says_to_resume_on_as_many_workers(reference: tuple[Path, Path], tmp_path: Path) -> None:
    # it said "continue with: onnxkit train --resume RUN", which goes on in one process: other dropout masks than
    # the uninterrupted run's (each rank draws its own), and slower
    model, _ = reference
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "onnxkit", "train", str(model), "--data", "digits-images",
                                "--epochs", "1000", "-o", str(run), "--workers", "2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # training has begun: rank 0 has logged a step
            if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") > 1:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert err.splitlines()[-1].endswith(f"; continue with: onnxkit train --resume {run} --workers 2"), err


def test_the_relay_leaves_out_mpiexecs_banner_and_once_stopping_the_ranks_stop_lines(tmp_path: Path) -> None:
    """Blank lines of a rank's own stay (one held back until the next line shows it is no banner's); the blank line
    before mpiexec's banner and the banner go, and once the launcher has passed a stop on, each rank's 'error:
    stopped by' line and every blank line (a Ctrl-C printed three such lines, click's blank lines between)."""
    from onnxkit.train.launch import _Relay

    log, out = tmp_path / "stdout.txt", io.StringIO()
    log.write_bytes(b"")
    relay = _Relay(log, out)
    rule = b"=" * 83
    for written, stopping, ended in [
        (b"a\n\n", False, False),
        (b"b\n\n\n", False, False),
        (b"\n" + rule + b"\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n" + rule + b"\n", False, False),
        (b"\nerror: stopped by SIGINT\n\nerror: stopped by SIGINT\n\n", True, False),
        (b"interrupted in epoch 3 after step 20: checkpoint saved\n\n", True, True),
    ]:
        with open(log, "ab") as f:
            f.write(written)
        relay.pump(ended, stopping)
    relay.close()
    assert out.getvalue() == "a\n\nb\n\n\ninterrupted in epoch 3 after step 20: checkpoint saved\n"
