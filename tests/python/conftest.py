"""Starts the built `sellsync sim` binary on a free loopback port and stops it afterwards.

The binary is $SELLSYNC_BIN, else $CARGO_TARGET_DIR/debug/sellsync, else target/debug/sellsync
at the repository root. Build it first: `cargo build -p sellsync`.
"""

import os
import pathlib
import subprocess
import threading

import basecrm
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT = 30


def binary():
    if os.environ.get("SELLSYNC_BIN"):
        return pathlib.Path(os.environ["SELLSYNC_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "sellsync"


class Sim:
    """A running simulator: its base URL and tokens by user name."""

    def __init__(self, *args):
        exe = binary()
        if not exe.exists():
            raise RuntimeError(f"{exe} not found; run `cargo build -p sellsync` first")
        self.proc = subprocess.Popen(
            [str(exe), "sim", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.base_url = None
        self.tokens = {}  # user name -> (token, user id, role)
        lines = []
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("ready"):
                    ready.set()
                    break

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError("sellsync sim did not start:\n" + "\n".join(lines))
        for line in lines:
            parts = line.split()
            if parts[0] == "base_url":
                self.base_url = parts[1]
            elif parts[0] == "token":
                # token T user ID "Name With Spaces" role R team X
                name = line.split('"')[1]
                role = parts[parts.index("role") + 1]
                self.tokens[name] = (parts[1], int(parts[3]), role)

    def token(self, name="Ada Admin"):
        return self.tokens[name][0]

    def user_id(self, name):
        return self.tokens[name][1]

    def client(self, name="Ada Admin", token=None):
        return basecrm.Client(access_token=token or self.token(name), base_url=self.base_url)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sim():
    s = Sim("--data", "demo")
    yield s
    s.stop()


@pytest.fixture
def start_sim():
    """Starts extra simulators with their own options; all are stopped after the test."""
    started = []

    def start(*args):
        s = Sim(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def client(sim):
    return sim.client()
