"""Running untrusted Python in a throwaway sandbox: bubblewrap namespaces, hard rlimits, a wall-clock timeout.

Each run is a fresh `bwrap` (bubblewrap 0.8 or later; Linux only), started without a shell, as a
process group of its own. What the isolation does:

- **Files**: an empty root of its own. Read-only: /usr (with /bin, /lib, /lib64, /sbin as on the
  host) and the folder of the Python installation that runs the program. A fresh /proc (its own
  processes only), a minimal /dev, and a writable /tmp of `disk_mb` in memory, its working
  directory and HOME, gone when the run ends. Nothing else: no home folders, no /etc, no project
  files, no host /tmp; a path outside is simply not there.
- **Network**: a network namespace of its own, with nothing but its own loopback: no connection
  leaves it.
- **Processes**: its own pid, IPC, UTS and cgroup namespaces: it sees and signals only its own
  processes, and when the run ends or is killed every process it started dies with it (the kernel
  ends a pid namespace with its first process), even one that left the process group. It runs as
  an unprivileged user with no capabilities: rest's own user, or `nobody` (65534) when rest runs as
  root, because root is exempt from RLIMIT_NPROC. It cannot create user namespaces itself.
- **Limits**, set as hard rlimits before the program is read, so it cannot raise them:
  RLIMIT_AS (`memory_mb` of address space per process), RLIMIT_CPU (CPU seconds), RLIMIT_NPROC
  (`processes`: a fork bomb stops there), RLIMIT_FSIZE (`file_mb` per file, its output included).
  A wall-clock `timeout` kills the whole process group (SIGKILL), and with it the namespace.
- **Environment**: emptied; the program sees PATH, HOME, LANG and rest's PYTHON* settings only,
  and on stdin only what rest sends.

What it does not stop:

- Memory across processes: RLIMIT_AS is per process, so a run may use up to `processes` x
  `memory_mb`, plus `disk_mb` of /tmp; CPU load up to the timeout.
- A kernel exploit: namespaces share the host kernel, and there is no seccomp filter.
- Reading what is mounted: /usr and the Python installation (not secret on a usual machine, but
  look at what your /usr/local holds).
- Timing and load side channels, and anything the program does to its own process: a program that
  tampers with the code that judges it (the `tests` reward's runner) can fool that judgement,
  though never the machine.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rest_cli.errors import UsageError

NOBODY = 65534  # the uid and gid a root rest drops to: root is exempt from RLIMIT_NPROC
OUTPUT_TAIL = 65536  # bytes of a run's output kept for its verdict and errors
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
# The host's top-level system folders, linked or bound read-only as they are (merged /usr or not).
SYSTEM_DIRS = ("/bin", "/lib", "/lib64", "/sbin")
# Runs first inside the sandbox: the hard limits, then the program from stdin (its length, a newline,
# its UTF-8 text); what follows on stdin is the program's own input.
LIMITER = """import resource, sys
for _name, _value in zip(("AS", "CPU", "NPROC", "FSIZE"), sys.argv[1:5]):
    resource.setrlimit(getattr(resource, "RLIMIT_" + _name), (int(_value), int(_value)))
del sys.argv[1:5]
_source = sys.stdin.buffer.read(int(sys.stdin.buffer.readline())).decode("utf-8")
exec(compile(_source, "<program>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class Limits:
    """What one run may use. `timeout` is wall-clock seconds; CPU time is capped at int(timeout) + 1."""

    timeout: float = 5.0
    memory_mb: int = 512   # address space per process (RLIMIT_AS)
    processes: int = 32    # processes and threads of the sandbox user (RLIMIT_NPROC)
    file_mb: int = 16      # the largest file it may write, its output included (RLIMIT_FSIZE)
    disk_mb: int = 64      # its writable /tmp, in memory

    def rlimits(self) -> list[str]:
        """AS, CPU, NPROC and FSIZE, as LIMITER takes them."""
        cpu = int(self.timeout) + 1
        return [str(v) for v in (self.memory_mb << 20, cpu, self.processes, self.file_mb << 20)]


@dataclass(frozen=True)
class Outcome:
    """How a run ended: `status` (bwrap's exit status: the program's, or 128 + a signal), whether
    the wall-clock timeout killed it, the last OUTPUT_TAIL bytes of its stdout and stderr, and how
    many bytes it wrote there in all (at most `file_mb`: past it writes fail with EFBIG)."""

    status: int
    timed_out: bool
    output: bytes
    output_bytes: int = 0


class Sandbox:
    """Runs Python programs, one fresh sandbox each; checked once when made (UsageError if it cannot run)."""

    def __init__(self, limits: Limits = Limits(), python: str | None = None, who: str = "the sandbox"):
        self.limits, self.who = limits, who
        self.bwrap = _bwrap(who)
        self.as_user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
        self.python = _interpreter(python, dropped=bool(self.as_user), who=who)
        self.version = self._probe()

    def argv(self, limits: Limits) -> list[str]:
        """The bwrap command line of a run, up to and including the limiter's arguments."""
        prefix = _installation(self.python, self.who)
        binds = [] if prefix == "/usr" or prefix.startswith("/usr/") else ["--ro-bind", prefix, prefix]
        return [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--ro-bind", "/usr", "/usr", *_system_dirs(), *binds,
                "--proc", "/proc", "--dev", "/dev", "--size", str(limits.disk_mb << 20),
                "--tmpfs", "/tmp", "--chdir", "/tmp",
                "--", self.python, "-s", "-c", LIMITER, *limits.rlimits()]

    def run(self, program: str, stdin: bytes = b"", limits: Limits | None = None) -> Outcome:
        """Run `program` (Python source) with `stdin`; kill it and all it started after the timeout."""
        limits = limits or self.limits
        source = program.encode("utf-8", "surrogatepass")
        payload = b"%d\n" % len(source) + source + stdin
        with tempfile.TemporaryFile() as output:  # a file, so RLIMIT_FSIZE bounds what it writes
            proc = subprocess.Popen(self.argv(limits), stdin=subprocess.PIPE, stdout=output, stderr=output,
                                    env=ENVIRONMENT, start_new_session=True, **self.as_user)
            timed_out = _wait(proc, payload, limits.timeout)
            return Outcome(proc.returncode, timed_out, *_tail(output))

    def _probe(self) -> str:
        """The sandbox's Python version, from one real run: a sandbox that cannot start fails here."""
        # A generous timeout: a busy machine may start Python slowly, and no candidate runs here.
        limits = dataclasses.replace(self.limits, timeout=max(30.0, self.limits.timeout))
        try:
            outcome = self.run("import sys; print(sys.version.split()[0])", limits=limits)
        except OSError as err:
            raise UsageError(f"{self.who} cannot start bwrap: {err.strerror or err}") from None
        text = outcome.output.decode("utf-8", "replace").strip()
        if outcome.status != 0 or outcome.timed_out:
            raise UsageError(f"{self.who} cannot run Python in a bubblewrap sandbox: "
                             f"{_first_line(text) or f'status {outcome.status}'} ({HINT})")
        return text.splitlines()[-1]


HINT = ("it needs bubblewrap 0.8 or later and user namespaces; on Ubuntu 24.04 allow them with "
        "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`; docs/rewards.md")


def _bwrap(who: str) -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise UsageError(f"{who} needs bubblewrap (bwrap) to isolate candidate programs: "
                         f"apt-get install bubblewrap (Debian, Ubuntu) or dnf install bubblewrap (Fedora)")
    return found


def _interpreter(python: str | None, dropped: bool, who: str) -> str:
    """The Python that runs programs: `python`, else the installation behind rest's own (not its venv:
    rest's packages stay outside). Run as nobody, a Python it cannot read gives way to /usr/bin/python3."""
    if python is not None:
        found = shutil.which(python)
        if found is None:
            raise UsageError(f"{who}: no Python interpreter {python!r}")
        return os.path.realpath(found)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix, "bin", version)
    chosen = os.path.realpath(base if base.exists() else sys.executable)
    if dropped and not _world_readable(chosen) and _world_readable("/usr/bin/python3"):
        return os.path.realpath("/usr/bin/python3")
    return chosen


def _world_readable(path: str) -> bool:
    """Whether any user can reach `path`: every folder above it searchable by others, and it readable."""
    target = Path(path)
    try:
        folders_ok = all(folder.stat().st_mode & 0o001 for folder in target.parents)
        return folders_ok and bool(target.stat().st_mode & 0o004)
    except OSError:
        return False


def _installation(python: str, who: str) -> str:
    """The folder that holds the interpreter's bin/ (its prefix), mounted read-only for it."""
    prefix = str(Path(python).parent.parent)
    if prefix == "/":
        raise UsageError(f"{who}: the interpreter {python} is not inside an installation folder "
                         f"(PREFIX/bin/python): give one, e.g. python='/usr/bin/python3'")
    return prefix


def _system_dirs() -> list[str]:
    """bwrap arguments giving /bin, /lib, ... as the host has them: a link into /usr, or a read-only bind."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _wait(proc: subprocess.Popen, payload: bytes, timeout: float) -> bool:
    """Send `payload` and wait for the run; True if the timeout killed it. Killed on any interruption."""
    try:
        proc.communicate(payload, timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        _kill(proc)
        return True
    except BaseException:  # Ctrl-C, SIGTERM: the sandbox must not outlive rest's interrupted command
        _kill(proc)
        raise


def _kill(proc: subprocess.Popen) -> None:
    # Not yet reaped, so its pid (the group's id) cannot belong to anyone else. bwrap dies with its
    # group, and its pid namespace with it: what left the group dies there.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # the group is already gone
        pass
    proc.wait()


def _tail(output) -> tuple[bytes, int]:
    """The last OUTPUT_TAIL bytes of the file, and its size."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL))
    return output.read(), size


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""
