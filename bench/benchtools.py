"""What every benchmark script needs: the peers installed, and a server answering."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request


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
