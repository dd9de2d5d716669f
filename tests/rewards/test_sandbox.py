"""The sandbox the `tests` reward runs candidates in: malicious candidates get a verdict, and nothing escapes.

Each candidate runs through the reward, as in a ReST loop. "Nothing escapes": a secret file under
tmp_path is neither read nor changed, nothing appears beside it, no connection reaches a server on
the host, and no process the candidate started is left running (checked in /proc).
"""

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

from rest_cli.errors import UsageError
from rest_cli.rewards import build_reward, score_records
from rest_cli.rewards import sandbox as sandbox_module
from rest_cli.rewards.sandbox import LIMITER, Limits, Sandbox

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap "
                                        "(CI installs it)")


def sandboxed(test):
    """A test that runs candidates in real sandboxes: it starts processes, and needs bwrap."""
    return pytest.mark.subprocess(needs_bwrap(test))


# Every sandboxed process carries the limiter in its command line (bwrap's, and the runner's forks).
SANDBOXED = LIMITER.splitlines()[1].encode()


def processes_with(marker: bytes) -> list[int]:
    """The ids of the running processes whose command line holds `marker` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # it ended while we looked
                pass
    return found


def assert_none_left(marker: bytes, within: float = 5.0) -> None:
    """No process with `marker` within `within` seconds (a killed namespace takes a moment to go)."""
    deadline = time.monotonic() + within
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"stray processes: {left}"


@pytest.fixture(scope="module")
def reward():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap (CI installs it)")
    return build_reward("tests(timeout=2, memory_mb=256)")


def verdict(reward, hyp: str, tests: str = "") -> dict:
    """The record `reward` writes for one candidate."""
    record, = score_records([{"hyp": hyp, "tests": tests}], reward)
    return record


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(f"SECRET-{uuid.uuid4().hex}")
    yield path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"], "a file appeared beside it"


# --- files ---------------------------------------------------------------------------------------

@sandboxed
@pytest.mark.parametrize("how", [
    "print(open({path!r}).read())",
    "print(open('/proc/1/root' + {path!r}).read())",
    "os.chdir('/')\nprint(open('../../../..' + {path!r}).read())",
    "print(open(os.path.join('/proc', str(os.getppid()), 'root') + {path!r}).read())",
])
def test_a_file_outside_cannot_be_read(reward, secret, how):
    hyp = f"import os\n{how.format(path=str(secret))}\n"
    record = verdict(reward, hyp)
    assert record["tests_verdict"].startswith("error: FileNotFoundError"), record["tests_verdict"]
    assert secret.read_text() not in json.dumps(record)


@sandboxed
def test_the_file_system_holds_only_the_system_and_a_fresh_tmp(reward, secret):
    python_top = Path(reward.sandbox.python).parts[1]  # "usr", or where a Python outside /usr lives
    system = {"bin", "dev", "lib", "lib64", "proc", "sbin", "tmp", "usr", python_top}
    hyp = "import os\nroot = set(os.listdir('/'))\ncwd = os.getcwd()\nhere = os.listdir('.')\n"
    tests = f"assert root <= {system!r}, root\nassert (cwd, here) == ('/tmp', []), (cwd, here)\n"
    assert verdict(reward, hyp, tests)["tests_verdict"] == "passed"


@sandboxed
@pytest.mark.parametrize("how", [
    "open({path!r}, 'w').write('gotcha')",
    "open({parent!r} + '/planted.txt', 'w').write('gotcha')",
    "open('/usr/planted.txt', 'w').write('gotcha')",
    "os.symlink({path!r}, 'link'); open('link', 'w').write('gotcha')",
])
def test_a_file_outside_cannot_be_written(reward, secret, how):
    before = secret.read_text()
    hyp = "import os\n" + how.format(path=str(secret), parent=str(secret.parent)) + "\n"
    record = verdict(reward, hyp)
    assert record["tests_verdict"].startswith(("error: FileNotFoundError", "error: OSError: [Errno 30]",
                                               "error: PermissionError")), record["tests_verdict"]
    assert secret.read_text() == before
    assert not Path("/usr/planted.txt").exists()


@sandboxed
def test_what_it_writes_in_its_own_tmp_is_gone_after_the_run(reward):
    first = verdict(reward, "open('/tmp/left.txt', 'w').write('x')\n",
                    "import os\nassert os.path.exists('left.txt')")
    second = verdict(reward, "import os\n", "assert not os.path.exists('/tmp/left.txt')")
    assert (first["tests_verdict"], second["tests_verdict"]) == ("passed", "passed")


@sandboxed
def test_the_disk_is_bounded(reward):
    hyp = "block = b'x' * (1 << 20)\nfor n in range(1000):\n    open(f'f{n}', 'wb').write(block)\n"
    record = verdict(reward, hyp)
    assert record["tests_verdict"] == "error: OSError: [Errno 28] No space left on device"


# --- network -------------------------------------------------------------------------------------

@sandboxed
def test_no_connection_leaves_the_sandbox(reward):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        local = verdict(reward, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), "
                                f"timeout=1)\n")
        remote = verdict(reward, "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n")
        with pytest.raises(OSError):  # socket.timeout: nobody knocked
            server.accept()
    finally:
        server.close()
    assert local["tests_verdict"] == "error: ConnectionRefusedError: [Errno 111] Connection refused"
    assert remote["tests_verdict"] == "error: OSError: [Errno 101] Network is unreachable"


# --- processes -----------------------------------------------------------------------------------

def sleeper(marker: str) -> str:
    """Python source for: start a process that outlives its parent and sleeps with `marker` on its line."""
    return ("import os, sys\n"
            "def sleeper():\n"
            "    os.execv(sys.executable,\n"
            f"             [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n")


@sandboxed
def test_a_fork_bomb_stops_at_the_process_limit(reward):
    start = time.monotonic()
    record = verdict(reward, "import os\nwhile True:\n    os.fork()\n")
    assert record["tests_verdict"] == "error: BlockingIOError: [Errno 11] Resource temporarily unavailable"
    assert time.monotonic() - start < 2.0  # stopped by the limit, not by the timeout
    assert_none_left(SANDBOXED)


@sandboxed
def test_forks_are_counted_and_none_survives(reward):
    marker = f"marker-{uuid.uuid4().hex}"
    hyp = sleeper(marker) + ("children = 0\nwhile True:\n    try:\n        pid = os.fork()\n"
                             "    except OSError:\n        break\n    if pid == 0:\n        sleeper()\n"
                             "    children += 1\n")
    record = verdict(reward, hyp, f"assert children < {Limits().processes}, children")
    assert record["tests_verdict"] == "passed"
    assert_none_left(marker.encode())


@sandboxed
def test_a_daemon_that_leaves_the_process_group_dies_with_the_sandbox(reward):
    marker = f"marker-{uuid.uuid4().hex}"
    hyp = sleeper(marker) + ("if os.fork() == 0:\n    os.setsid()\n"
                             "    if os.fork() == 0:\n        sleeper()\n    os._exit(0)\nos.wait()\n")
    assert verdict(reward, hyp)["tests_verdict"] == "passed"
    assert_none_left(marker.encode())


@sandboxed
def test_a_hanging_candidate_and_its_children_are_killed(reward):
    marker = f"marker-{uuid.uuid4().hex}"
    hyp = sleeper(marker) + ("for _ in range(3):\n    if os.fork() == 0:\n        sleeper()\n"
                             "while True:\n    pass\n")
    start = time.monotonic()
    assert verdict(reward, hyp)["tests_verdict"] == "timeout"
    assert time.monotonic() - start < 4.0
    assert_none_left(marker.encode())
    assert_none_left(SANDBOXED)


@sandboxed
def test_the_limits_cannot_be_raised(reward):
    hyp = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
    assert verdict(reward, hyp)["tests_verdict"] == "error: ValueError: not allowed to raise maximum limit"


@sandboxed
def test_the_environment_is_not_passed_on(reward, monkeypatch):
    monkeypatch.setenv("REST_TEST_TOKEN", "hunter2")
    tests = ("import os\nassert 'REST_TEST_TOKEN' not in os.environ\n"
             "assert set(os.environ) <= {'PATH', 'HOME', 'PWD', 'LANG', 'PYTHONHASHSEED', "
             "'PYTHONDONTWRITEBYTECODE', 'PYTHONIOENCODING'}, sorted(os.environ)\n"
             "assert os.getuid() != 0\n")
    assert verdict(reward, "", tests)["tests_verdict"] == "passed"


# --- a sandbox that cannot be made ---------------------------------------------------------------

def test_without_bwrap_the_reward_says_what_to_install(monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(UsageError, match="reward 'tests' needs bubblewrap \\(bwrap\\) to isolate candidate "
                                         "programs: apt-get install bubblewrap"):
        build_reward("tests")


@pytest.mark.subprocess
def test_a_bwrap_that_cannot_make_namespaces_is_one_line(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)  # run it as we are, not as nobody
    with pytest.raises(UsageError) as error:
        Sandbox(Limits(), who="reward 'tests'")
    message = str(error.value)
    assert message.startswith("reward 'tests' cannot run Python in a bubblewrap sandbox: "
                              "bwrap: setting up uid map: Permission denied (it needs bubblewrap 0.8")
    assert "\n" not in message


def test_an_interpreter_that_does_not_exist(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_bwrap", lambda who: "/usr/bin/bwrap")
    with pytest.raises(UsageError, match="reward 'tests': no Python interpreter '/no/such/python'"):
        build_reward('tests(python="/no/such/python")')
