"""The operator's command exits as soon as it is done, without the interpreter's
teardown (roost.__main__.exit_now), and still says everything it had to say."""

from __future__ import annotations

import subprocess
import sys

#: run as the program is (main() reading sys.argv), with an atexit hook that would
#: print if the interpreter's teardown ran
PROGRAM = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('TEARDOWN RAN', flush=True))\n"
    "sys.argv = ['roost', *sys.argv[1:]]\n"
    "from roost.__main__ import main\n"
    "sys.exit(main())\n"
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True,
                          text=True, timeout=60)


def test_a_finished_command_skips_teardown_but_keeps_its_whole_output() -> None:
    result = run("deploy", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--hosts" in result.stdout
    assert "TEARDOWN RAN" not in result.stdout


def test_a_failing_command_keeps_its_exit_code_and_its_error_line() -> None:
    result = run("deploy", "/nonexistent/roost-exit-now", "--hosts", "h1", "--dest", "/srv/app")
    assert result.returncode != 0
    assert "roost: error:" in result.stderr or "Error" in result.stderr
    assert "TEARDOWN RAN" not in result.stdout


def test_a_caller_passing_argv_keeps_the_normal_exit() -> None:
    # tests and embedders call main(argv): they get the code back, teardown as usual
    probe = ("import atexit\n"
             "atexit.register(lambda: print('TEARDOWN RAN', flush=True))\n"
             "from roost.__main__ import main\n"
             "print('code', main(['deploy', '--help']))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "code 0" in result.stdout and "TEARDOWN RAN" in result.stdout
