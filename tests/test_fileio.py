"""fileio (atomic writes, their temp files, the output-folder check) and runlock (one live owner per run
folder), with real processes: a holder in a child process, ``kill -9`` of it, both runners refusing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from merbench_plugins import fileio, runlock
from merbench_plugins.train import runner

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "merbench_tree"

# holds the run lock of argv[1:] until killed
HOLDER = ("import sys, time; from merbench_plugins import runlock; runlock.claim(*sys.argv[1:]); "
          "print('held', flush=True); time.sleep(60)")


def hold(*folders):
    """A live process holding the run locks of ``folders`` (started and holding when this returns)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, folders)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "held"
    return proc


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# --------------------------------------------------------------------------------- atomic writes

def test_temp_files_are_named_after_their_target_and_a_failed_write_leaves_none(tmp_path):
    target = tmp_path / "summary.json"
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(str(target)) as tmp:
            assert fileio.is_temp_of(os.path.basename(tmp), ["summary.json"])     # recognisable as ours
            assert os.path.dirname(tmp) == str(tmp_path)
            Path(tmp).write_text("half")
            raise RuntimeError("the writer failed")
    assert os.listdir(tmp_path) == []
    fileio.atomic_save_npz(str(tmp_path / "r.npz"), x=[1, 2])
    fileio.atomic_write_text(str(target), "{}")
    assert sorted(os.listdir(tmp_path)) == ["r.npz", "summary.json"]


def test_leftover_temps_are_ours_only(tmp_path):
    ours = [".summary.json.ab12cd_9.tmp", ".r.npz.k3j9x0qa.tmp.npz", ".__init__.py.zzzzzzzz.tmp",
            ".tmp-a1b2c3d4summary.json"]                 # the last: the name earlier versions used
    theirs = ["summary.json", ".summary.json", "x.tmp", ".notes.tmp", ".a.py.SHORT.tmp", ".a.py.abcdefgh.tmpx"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    assert sorted(map(os.path.basename, fileio.leftover_temps(str(tmp_path)))) == sorted(ours)
    assert list(map(os.path.basename, fileio.leftover_temps(str(tmp_path), ["__init__.py"]))) == [ours[2]]
    fileio.remove_leftover_temps(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)


# --------------------------------------------------------------------------------------- run locks

def test_a_live_holder_is_named_a_killed_one_frees_the_folder(tmp_path):
    run = tmp_path / "seed1"
    holder = hold(run)
    try:
        who = runlock.owner(str(run))
        assert who.startswith(f"pid {holder.pid} on ") and "since" in who
        assert runlock.owners([str(tmp_path)]) == [(str(run), who)]       # found one folder down too
        with pytest.raises(runlock.RunFolderBusy, match=f"{run} is being trained into by another live process "
                                                        rf"\(pid {holder.pid} on "):
            runlock.claim(str(tmp_path / "free"), str(run))
        assert not (tmp_path / "free" / runlock.LOCK_NAME).exists()      # all or none
    finally:
        kill(holder)
    assert (run / runlock.LOCK_NAME).exists() and runlock.owner(str(run)) is None   # stale file, no owner
    (run / ".summary_x.json.ab12cd34.tmp").write_text("half")             # what the killed writer left
    (run / "result").mkdir()
    (run / "result" / ".test1.npz.ab12cd34.tmp.npz").write_text("half")
    runlock.claim(str(run))
    try:
        assert sorted(os.listdir(run)) == [runlock.LOCK_NAME, "result"] and os.listdir(run / "result") == []
        assert json.loads((run / runlock.LOCK_NAME).read_text())["pid"] == os.getpid()
        runlock.claim(str(run))                                            # ours already: fine
        probe = subprocess.run([sys.executable, "-c", "import sys; from merbench_plugins import runlock; "
                                "print(runlock.owner(sys.argv[1]))", str(run)],
                               capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert probe.stdout.startswith(f"pid {os.getpid()} on ")
    finally:
        runlock.release(str(run))
    assert os.listdir(run) == ["result"]                                  # released: the lock file goes too


def test_a_launcher_hands_its_locks_down_to_the_job(tmp_path):
    """acquire (launcher) -> hand_down -> claim in the job adopts them; a third process is refused all along;
    the lock file is the launcher's to remove."""
    run = tmp_path / "seed0"
    held, busy = runlock.acquire([str(run)], ["job", "argv"])
    assert busy is None and runlock.owner(str(run)).endswith(": job argv")
    env, fds = runlock.hand_down(held)
    code = ("import sys; from merbench_plugins import runlock; runlock.claim(sys.argv[1]); "
            "print(runlock.owner(sys.argv[1]), flush=True)")
    try:
        job = subprocess.run([sys.executable, "-c", code, str(run)], pass_fds=fds, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO), **env))
        assert job.returncode == 0 and job.stdout.strip() == "None", job.stderr     # adopted: held by itself
        assert (run / runlock.LOCK_NAME).exists()                 # the job is gone, the launcher still holds it
        third = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO), **env))    # same env, no fds: refused
        assert third.returncode == 1 and "RunFolderBusy" in third.stderr
    finally:
        runlock.release_all(held)
    assert not run.exists() and runlock.owner(str(run)) is None      # the folder it made for the lock, too


def test_standalone_runner_refuses_a_folder_another_live_process_trains_into(tmp_path, tiny_data, capsys):
    out = tmp_path / "run"
    holder = hold(out)
    try:
        assert runner.main([str(tiny_data), "--model", "attention", "--epochs", "1", "--folds", "2", "--quiet",
                            "--threads", "1", "--out", str(out)]) == 2
    finally:
        kill(holder)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out} is being trained into by another live process (pid {holder.pid} on ")
    assert len(err.splitlines()) == 1 and os.listdir(out) == [runlock.LOCK_NAME]     # nothing trained


def test_main_robust_refuses_a_save_root_another_live_process_trains_into(tmp_path, tiny_data):
    import shutil
    from merbench_plugins.installer import cli as install_cli
    root = tmp_path / "MERBench"
    shutil.copytree(FIXTURE, root)
    assert install_cli.main([str(root)]) == 0
    holder = hold(tmp_path / "saved-trimodal")      # --save_root gets MERBench's -trimodal suffix
    try:
        proc = subprocess.run([sys.executable, "main-robust.py", "--dataset", "MER2023", "--model", "attention",
                               "--feat_type", "utt", "--audio_feature", "chinese-hubert-large-UTT", "--text_feature",
                               "Baichuan-13B-Base-UTT", "--video_feature", "clip-vit-large-patch14-UTT", "--gpu", "-1",
                               "--epochs", "1", "--save_root", str(tmp_path / "saved")], cwd=root,
                              env=dict(os.environ, MERBENCH_FIXTURE_DATA=str(tiny_data), PYTHONPATH=str(REPO)),
                              capture_output=True, text=True, timeout=120)
    finally:
        kill(holder)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert f"saved-trimodal is being trained into by another live process (pid {holder.pid}" in proc.stderr
    assert "Reading Data" not in proc.stdout


def test_a_command_piped_into_head_ends_quietly():
    """``python -m merbench_plugins ... | head -1``: the closed pipe ends the command with exit 1, no traceback."""
    import subprocess
    import sys
    code = ("import sys; from merbench_plugins.cli import run_cli\n"
            "def main():\n    for _ in range(20000):\n        print('x' * 100)\n    return 0\n"
            "sys.exit(run_cli(main))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                      # what `head -1` does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err
