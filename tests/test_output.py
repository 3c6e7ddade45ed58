import fcntl
import json
import os

import pytest

from ckpt_tools.errors import OutputError
from ckpt_tools.io.output import JOURNAL_FILE, LOCK_FILE, OutputDir


def test_refuses_source_relationships(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for dst in (src, src / "inner", tmp_path):
        with pytest.raises(OutputError):
            with OutputDir(dst, sources=[src]):
                pass


def test_lock_refuses_second_writer(tmp_path):
    dst = tmp_path / "out"
    with OutputDir(dst):
        with pytest.raises(OutputError, match="lock held"):
            with OutputDir(dst, overwrite=True):
                pass
    assert not (dst / LOCK_FILE).exists()


def test_lock_held_by_another_process(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    fd = os.open(dst / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    pid = os.fork()
    if pid == 0:  # child holds the lock until killed
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(1, b"")
        import time
        time.sleep(30)
        os._exit(0)
    try:
        import time
        for _ in range(100):
            try:
                fcntl.flock(os.open(dst / LOCK_FILE, os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break
            time.sleep(0.02)
        with pytest.raises(OutputError, match="lock held"):
            with OutputDir(dst):
                pass
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_resume_journal(tmp_path):
    dst = tmp_path / "out"
    job = {"cmd": "x", "opt": 1}
    with pytest.raises(RuntimeError):
        with OutputDir(dst, job=job) as out:
            (dst / "a.bin").write_bytes(b"a")
            out.mark_done("a.bin")
            (dst / "b.bin").write_bytes(b"half")
            raise RuntimeError("crash")
    assert (dst / JOURNAL_FILE).exists()
    with OutputDir(dst, job=job) as out:
        assert out.resumed and out.is_done("a.bin") and not out.is_done("b.bin")
    assert not (dst / JOURNAL_FILE).exists()
    # a different job is not a resume
    with pytest.raises(OutputError, match="not empty"):
        with OutputDir(dst, job={"cmd": "y"}):
            pass


def test_overwrite_clears_files(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old.safetensors").write_bytes(b"x")
    (dst / "stale.safetensors.partial").write_bytes(b"x")
    with OutputDir(dst, overwrite=True):
        pass
    assert not any(dst.iterdir())


def test_second_cli_run_on_the_same_destination_is_refused(make_ckpt, tmp_path, run_cli):
    """A real second `ckpt upcast` into a DST another process is writing: refused, and the
    other run's files are untouched (never interleaved)."""
    import subprocess
    import sys

    src = make_ckpt("v3", fp8=True)
    dst = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from ckpt_tools.io.output import OutputDir\n"
         f"with OutputDir({str(dst)!r}, job={{'cmd': 'other'}}):\n"
         f"    open({str(dst / 'theirs.safetensors.partial')!r}, 'w').write('x')\n"
         "    print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        r = run_cli("upcast", src, dst, "--workers", "1")
        assert r.exit_code == 1
        assert "another ckpt run is writing here" in r.stderr
        assert sorted(p.name for p in dst.iterdir() if not p.name.startswith(".")) == [
            "theirs.safetensors.partial"]
    finally:
        holder.kill()
        holder.wait()


def test_overwrite_keeps_what_the_user_put_there(tmp_path):
    """Issue 27, 12: --overwrite removes a checkpoint's files, never a user's own."""
    src, dst = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    (src / "LICENSE").write_text("the model's")
    for name in ("model-00001-of-00002.safetensors", "model.safetensors.index.json",
                 "config.json", "tokenizer.json", "LICENSE", "ckpt-manifest.json"):
        (dst / name).write_text("old")
    user = {"README.md": "mine", "notes.txt": "mine", "my_eval_results.csv": "a,b"}
    for name, text in user.items():
        (dst / name).write_text(text)
    with OutputDir(dst, sources=[src], overwrite=True) as out:
        assert sorted(out.kept) == sorted(user)
    assert {p.name: p.read_text() for p in dst.iterdir()} == user


@pytest.mark.parametrize("command", ["upcast", "quantize", "reshard"])
def test_files_overwrite_kept_are_in_the_report_and_json(command, make_ckpt, tmp_path, run_cli):
    """Issue 27: the user's files --overwrite kept are a typed field of the writer's report
    (so in --json), not only a line on stderr."""
    src = make_ckpt("v3", fp8=command != "quantize", shards=2)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "README.md").write_text("mine")
    (dst / "model.safetensors").write_text("old")
    extra = ["--max-shard-size", "200KB"] if command == "reshard" else []
    r = run_cli(command, str(src), str(dst), "--overwrite", "--json", *extra)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["kept"] == ["README.md"]
    assert (dst / "README.md").read_text() == "mine"
