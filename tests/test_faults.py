"""Training faults: a run SIGKILLed anywhere resumes to the same weights; a dead or
hung rank stops the others with an error in bounded time.

The kills come from ``tests/fault_runner.py``, which runs the unchanged recipe and
SIGKILLs (or SIGSTOPs) its own process at a chosen batch, validation batch or
checkpoint file; production code has no test hooks.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO
from test_recipe import final_weights, max_difference, recipe_command, run

from multitask.checkpoints import STAGING

pytestmark = pytest.mark.slow
pytest_plugins = ["trained_tiny"]  # the uninterrupted reference run, shared by the session

RUNNER = "tests/fault_runner.py"
# Several validation batches, so a kill can land between two of them; evaluation
# batching does not change what training computes.
SMALL_EVAL_BATCHES = "--eval_batching={max_batch_seconds: 4}"


def killed(point, args, **env):
    """Run the recipe through the fault runner; it must die of SIGKILL at ``point``."""
    proc = run([RUNNER, "--kill-at", point, *args], check=False, env=env)
    assert proc.returncode == -signal.SIGKILL, (
        f"expected death by SIGKILL at {point}, got {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def test_a_run_killed_mid_epoch_mid_checkpoint_and_mid_validation_ends_with_the_weights_of_an_uninterrupted_run(
    trained_run, group_norm_encoder, toy_corpus, tmp_path
):
    """Three kills in a row on one output folder, then the plain command finishes it;
    the reference is the session's uninterrupted 4-epoch run (``trained_run``, same
    command and seed). Tolerance 1e-6, as for the plain resume test: resumed epochs
    replay the same batches and seeds, so on CPU they are expected to be bit-identical
    (measured: 0)."""
    out = tmp_path / "faulty"
    save = out / "save"
    command = recipe_command(group_norm_encoder, toy_corpus, out, SMALL_EVAL_BATCHES,
                             "--export_folder=null")

    def published():
        return sorted(p.name for p in save.glob("CKPT+*"))

    # 1. Mid-epoch: epoch 2 dies before its third batch; epoch 1's checkpoint stands.
    first = killed("train:2:2", command)
    assert "epoch 1:" in first.stdout and "epoch 2:" not in first.stdout
    assert published() == ["CKPT+epoch-0001"]

    # 2. Mid-checkpoint-write: resumed after epoch 1, it dies with epoch 3's heads.ckpt
    # half written and the later files never written.
    second = killed("save:3:heads", command)
    assert f"Resuming from {save / 'CKPT+epoch-0001'} (epoch 1 done)" in second.stdout
    assert "epoch 2:" in second.stdout and "epoch 3:" in second.stdout
    partial = save / STAGING / "CKPT+epoch-0003"
    assert (partial / "CKPT.yaml").is_file() and (partial / "encoder.ckpt").is_file()
    assert not (partial / "optimizer.ckpt").exists()
    assert (partial / "heads.ckpt").stat().st_size > 0  # begun: torn, not missing
    with pytest.raises(Exception):  # noqa: B017 - torch raises several kinds for a torn file
        torch.load(partial / "heads.ckpt")
    assert "CKPT+epoch-0002" in published() and "CKPT+epoch-0003" not in published()

    # 3. During validation: the resumed run skips the partial epoch-3 save (loading its
    # torn heads.ckpt would have crashed), redoes epoch 3 and dies validating epoch 4.
    third = killed("valid:4:2", command)
    assert f"Resuming from {save / 'CKPT+epoch-0002'} (epoch 2 done)" in third.stdout
    assert not partial.exists(), "the interrupted save was not discarded"
    assert "epoch 3:" in third.stdout and "epoch 4:" not in third.stdout
    assert "CKPT+epoch-0003" in published() and "CKPT+epoch-0004" not in published()

    # 4. The plain command resumes after epoch 3 and finishes.
    last = run(command)
    assert f"Resuming from {save / 'CKPT+epoch-0003'} (epoch 3 done)" in last.stdout
    assert "epoch 4:" in last.stdout and "epoch 3:" not in last.stdout
    difference = max_difference(final_weights(trained_run, 4), final_weights(out, 4))
    print(f"largest weight difference after three kills: {difference:.3g}")
    assert difference < 1e-6


# ---------------------------------------------------------------- two processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_machines(script_args, tmp_path, port):
    """Two ``accelerate launch`` commands, one process each, as two machines run them:
    no launcher watches both processes, so each must notice the other's fault itself."""
    procs = []
    for machine in (0, 1):
        log = open(tmp_path / f"machine{machine}.log", "w")  # noqa: SIM115 - closed by the OS
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_machines", "2", "--machine_rank", str(machine), "--num_processes", "2",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--rdzv_backend", "static", "--mixed_precision", "no", "--dynamo_backend", "no",
               *script_args]
        procs.append(subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "ACCELERATE_USE_CPU": "true", "FAULT_LOG": str(tmp_path / "faults")},
        ))
    return procs


def launch_one_machine(script_args, tmp_path, port):
    """``accelerate launch`` with two processes (torch's elastic agent watches both)."""
    log = open(tmp_path / "machine0.log", "w")  # noqa: SIM115 - closed by the OS
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", "hparams/accelerate/cpu_2proc.yaml", "--main_process_port", str(port),
           *script_args]
    return [subprocess.Popen(
        cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "ACCELERATE_USE_CPU": "true", "FAULT_LOG": str(tmp_path / "faults")},
    )]


def fault_record(tmp_path, deadline=300):
    """``(signal name, pid, unix time)`` of the injected fault, once it happened."""
    path = tmp_path / "faults"
    end = time.time() + deadline
    while time.time() < end:
        if path.is_file() and path.read_text().endswith("\n"):
            name, _point, _rank_word, _rank, _pid_word, pid, when = path.read_text().split()
            return name, int(pid), float(when)
        time.sleep(0.1)
    raise AssertionError("the fault was never injected")


def stop_all(procs, pids=()):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("launch", [launch_one_machine, launch_two_machines],
                         ids=["one-launcher", "one-launcher-per-machine"])
def test_when_one_rank_dies_the_other_exits_with_an_error_within_120_s(
    launch, layer_norm_encoder, toy_corpus, tmp_path
):
    """Measured on 2 busy CPU cores: one launcher (torch's elastic agent) SIGTERMs rank 0
    1-2 s after rank 1 dies and exits 1; with a launcher per machine, rank 0's gloo
    all-reduce fails with "Connection reset by peer" and its launcher exits 4-9 s after."""
    script = [RUNNER, "--kill-at", "train:1:2", "--rank", "1",
              *recipe_command(layer_norm_encoder, toy_corpus, tmp_path / "run", "--batch_size=4")]
    procs = launch(script, tmp_path, free_port())
    pid = None
    try:
        name, pid, killed_at = fault_record(tmp_path)
        assert name == "SIGKILL"
        survivor = procs[0]
        returncode = survivor.wait(timeout=max(1, killed_at + 120 - time.time()))
        seconds = time.time() - killed_at
        output = (tmp_path / "machine0.log").read_text()
        assert returncode != 0 and seconds < 120
        assert "Root Cause" in output  # torch elastic's summary of which process failed
        if launch is launch_one_machine:
            assert "Signal 9 (SIGKILL) received by PID" in output
        else:
            assert "Connection reset by peer" in output or "Connection closed by peer" in output
        print(f"{launch.__name__}: the launcher of rank 0 exited {seconds:.1f} s after the kill")
    finally:
        stop_all(procs, [pid] if pid else [])


def test_when_one_rank_hangs_the_other_fails_after_dist_timeout_seconds(
    layer_norm_encoder, toy_corpus, tmp_path
):
    """A frozen process keeps its sockets open, so only the collective timeout stops
    the others; with ``--dist_timeout_seconds=20`` rank 0 fails about 20 s in (not
    shorter: on a loaded machine a legitimate wait at start-up may take seconds)."""
    script = [RUNNER, "--kill-at", "train:1:2", "--rank", "1", "--signal", "STOP",
              *recipe_command(layer_norm_encoder, toy_corpus, tmp_path / "run", "--batch_size=4",
                              "--dist_timeout_seconds=20")]
    procs = launch_two_machines(script, tmp_path, free_port())
    pid = None
    try:
        name, pid, stopped_at = fault_record(tmp_path)
        assert name == "SIGSTOP"
        returncode = procs[0].wait(timeout=max(1, stopped_at + 120 - time.time()))
        seconds = time.time() - stopped_at
        assert returncode != 0 and 20 <= seconds < 120
        assert "Timed out waiting 20000ms" in (tmp_path / "machine0.log").read_text()
        print(f"rank 0's launcher exited {seconds:.1f} s after rank 1 froze")
    finally:
        stop_all(procs, [pid] if pid else [])
