"""Real storage faults on the embedded ClickHouse (chDB) data path, for the ``disk-error`` chaos
scenario.

* **disk full**: the data path is a small tmpfs of its own, and a filler file takes every
  free byte, so ClickHouse's writes fail with ENOSPC / NOT_ENOUGH_SPACE. Mounting needs root
  (CAP_SYS_ADMIN); without it this fault is not available.
* **permission denied**: every directory of the data path is made ``0o500``, so ClickHouse
  cannot create a part's directory (EACCES). Root ignores file modes (CAP_DAC_OVERRIDE), so
  when we are root the sink runs with those capabilities dropped from its bounding set
  (``setpriv``): exactly the rights of a non-root service user owning its data.

Both are removed by undoing them (filler deleted, modes restored) while the sink runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

FILLER = "chaos-disk-filler"
# What lets root write regardless of file modes.
DAC_CAPABILITIES = "-dac_override,-dac_read_search,-fowner"


def sink_command_prefix() -> list[str]:
    """Wrapper for the sink process so file modes bind it even when we are root."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        return [setpriv, "--bounding-set", DAC_CAPABILITIES]
    return []


class DataPathFaults:
    """Inject and remove disk faults on one chDB data path (create before the sink starts)."""

    def __init__(self, path: Path, tmpfs_mb: int = 64) -> None:
        self.path = path
        self.tmpfs_mb = tmpfs_mb
        self.root = os.geteuid() == 0
        self.mounted = False
        self._modes: dict[Path, int] = {}
        self.unavailable: dict[str, str] = {}

    def prepare(self) -> None:
        """Mount the tmpfs (root only) on the still empty data path."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.root:
            self.unavailable["disk_full"] = "needs root to mount a tmpfs of its own"
            return
        done = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={self.tmpfs_mb}m,mode=0755",
                "tmpfs",
                str(self.path),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            self.mounted = True
        else:
            self.unavailable["disk_full"] = f"mount tmpfs failed: {done.stderr.strip()[:200]}"
        if shutil.which("setpriv") is None:
            self.unavailable["permission"] = "running as root without setpriv to drop CAP_DAC_*"

    @property
    def available(self) -> list[str]:
        return [f for f in ("disk_full", "permission") if f not in self.unavailable]

    # -- disk full

    def fill(self) -> int:
        """Take every free byte of the tmpfs; returns the bytes written."""
        written = 0
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (1 << 20, 4096, 1):  # unbuffered: nothing left to fail on close
                block = b"\0" * chunk
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def unfill(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / FILLER).unlink()

    # -- permission denied

    def deny_writes(self) -> int:
        """Every directory of the data path to ``0o500``; returns how many."""
        dirs = [self.path, *(p for p in self.path.rglob("*") if p.is_dir() and not p.is_symlink())]
        for d in dirs:
            with contextlib.suppress(FileNotFoundError):
                self._modes.setdefault(d, d.stat().st_mode & 0o7777)
                os.chmod(d, 0o500)
        return len(dirs)

    def allow_writes(self) -> None:
        modes, self._modes = self._modes, {}
        for d, mode in modes.items():
            with contextlib.suppress(FileNotFoundError):
                os.chmod(d, mode)

    def cleanup(self) -> None:
        """Undo everything (after the sink stopped)."""
        self.allow_writes()
        self.unfill()
        if self.mounted:
            done = subprocess.run(["umount", str(self.path)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False
