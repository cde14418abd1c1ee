"""Fixtures of the bindings' Python suite: the generated `sellsync` module and a real hub.

Nothing is built here: scripts/ffi-python.sh builds the CLI and sellsync-ffi, generates the
bindings into target/bindings/python (the module and libsellsync_ffi.so side by side) and runs
pytest. The module's directory is $SELLSYNC_BINDINGS, else target/bindings/python; the hub is
`sellsync hub` from $SELLSYNC_BIN, else $CARGO_TARGET_DIR/debug/sellsync, else
target/debug/sellsync (as tests/python/conftest.py finds it).
"""

import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
START_TIMEOUT = 60


def _target():
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target if target.is_absolute() else ROOT / target


def binary():
    if os.environ.get("SELLSYNC_BIN"):
        return pathlib.Path(os.environ["SELLSYNC_BIN"])
    return _target() / "debug" / "sellsync"


def bindings():
    if os.environ.get("SELLSYNC_BINDINGS"):
        return pathlib.Path(os.environ["SELLSYNC_BINDINGS"])
    return _target() / "bindings" / "python"


_dir = bindings()
if not (_dir / "sellsync.py").exists():
    # A missing module fails the run (it is not skipped): run scripts/ffi-python.sh.
    raise RuntimeError(f"{_dir}/sellsync.py not found; run scripts/ffi-python.sh")
sys.path.insert(0, str(_dir))


def run(*args):
    """Runs `sellsync ARGS...`, returns its stdout; fails on a non-zero exit."""
    out = subprocess.run(
        [str(binary()), *args], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise RuntimeError(f"sellsync {' '.join(args)} failed: {out.stderr}")
    return out.stdout


class Hub:
    """A running `sellsync hub` on 127.0.0.1 (a free port the OS picks), with the example
    catalog and one team (users 2 and 3)."""

    def __init__(self, workdir):
        exe = binary()
        if not exe.exists():
            raise RuntimeError(f"{exe} not found; run scripts/ffi-python.sh")
        self.dir = pathlib.Path(workdir)
        self.store = self.dir / "hub.redb"
        acl = self.dir / "acl.toml"
        acl.write_text("admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n")
        catalog = HERE / "catalog.json"
        self.log = self.dir / "hub.log"
        self.proc = subprocess.Popen(
            [
                str(exe), "hub", "--store", str(self.store), "--listen", "127.0.0.1:0",
                "--acl", str(acl), "--catalog", str(catalog),
            ],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "w"),
            text=True,
        )
        first = []
        ready = threading.Event()

        def read():
            first.append(self.proc.stdout.readline())
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT) or not first[0].startswith("listening on "):
            self.stop()
            raise RuntimeError(
                f"sellsync hub did not start: {first!r}\n{self.log.read_text()}"
            )
        self.url = first[0].split()[-1]

    def token(self, user, device):
        t = json.loads(
            run("hub", "token", "--store", str(self.store), "--user", str(user),
                "--device", device, "--json")
        )
        return t["token"]

    def revoke(self, device):
        r = json.loads(
            run("hub", "revoke", "--store", str(self.store), "--device", device, "--json")
        )
        assert r["revoked"] >= 1, r

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path)
    yield h
    h.stop()
