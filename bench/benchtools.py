"""What every benchmark script needs: the peers installed, and a server answering."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterable


def ensure_tools(packages: dict[str, str]) -> None:
    """Install with apt-get (root, Debian) the package of each command that is missing."""
    missing = [name for name in packages if shutil.which(name) is None]
    if not missing:
        return
    print(f"installing {', '.join(missing)} with apt-get", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *(packages[m] for m in missing)],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def wait_ok(url: str, timeout_s: float = 20.0) -> None:
    """Poll `url` until it answers 200; RuntimeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200")


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """SIGTERM every process still running, then wait for each; SIGKILL one that does not
    exit within `timeout_s`."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
