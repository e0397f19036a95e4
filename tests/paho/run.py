#!/usr/bin/env python3
"""Runs one Paho MQTT interoperability suite (upstream/, unmodified) against a server.

    run.py SUITE HOST PORT [--timeout S] [--json FILE] [--logs DIR] [TEST ...]
    run.py SUITE --list

SUITE is v311 (client_test.py, MQTT 3.1.1) or v5 (client_test5.py, MQTT 5). Each test runs in
a process of its own, one after the other, and is killed after --timeout seconds. One line per
test (PASS, FAIL or TIMEOUT, its seconds and, when it did not pass, why), then
`passed N of M`. --json FILE writes {"test_name": "pass" | "fail" | "timeout"}.

Exit status: 0 when every test passed, 1 when one did not, 2 when the arguments are wrong or
the server cannot be reached. See README.md beside this file for why it is run this way.
"""

import argparse
import ast
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # nothing written into the vendored tree

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE_DIR = os.path.join(HERE, "upstream", "interoperability")
SUITES = {"v311": "client_test.py", "v5": "client_test5.py"}
CHILD_FLAG = "--run-one-test-in-this-process"


def script_path(suite):
    return os.path.join(SUITE_DIR, SUITES[suite])


def test_names(suite):
    """The test methods of the script's `Test` class, in unittest's order (sorted by name).
    Read from its syntax tree, so nothing of the suite runs here."""
    with open(script_path(suite), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Test":
            return sorted(
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test")
            )
    raise SystemExit(f"no class Test in {script_path(suite)}")


def run_one_test_in_this_process(suite, host, port, test, result_file, timeout):
    """The child: runs the script as __main__, with the --hostname/--port it parses itself,
    but makes its `unittest.main()` run just `Test.<test>` instead of re-parsing sys.argv (which
    holds options unittest rejects). Writes the outcome to result_file, then exits at once:
    the suite's client threads may still be blocked on sockets."""
    import faulthandler
    import runpy
    import unittest

    # On a timeout the parent asks where the test is stuck before it kills it.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    # Should the parent itself be killed, SIGALRM (no handler: the process ends) still stops a
    # test that spins forever.
    signal.alarm(int(timeout) + 30)

    script = script_path(suite)
    os.chdir(SUITE_DIR)
    sys.path.insert(0, SUITE_DIR)
    real_main = unittest.main

    def main(*args, **kwargs):
        kwargs.update(argv=[script, "Test." + test], exit=False, verbosity=2)
        result = real_main(*args, **kwargs).result
        problems = result.errors + result.failures
        reason = ""
        if problems:
            lines = [line for line in problems[0][1].splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else ""
        passed = result.wasSuccessful() and result.testsRun == 1
        with open(result_file, "w", encoding="utf-8") as f:
            json.dump({"outcome": "pass" if passed else "fail", "reason": reason}, f)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if passed else 1)

    unittest.main = main
    sys.argv = [script, "--hostname", host, "--port", str(port)]
    runpy.run_path(script, run_name="__main__")
    # Only reached if the script did not call unittest.main().
    os._exit(3)


def run_test(suite, host, port, test, timeout, log_dir):
    """Runs one test in a child process; returns (outcome, seconds, reason)."""
    log_path = os.path.join(log_dir, test + ".log")
    result_file = os.path.join(log_dir, test + ".result.json")
    if os.path.exists(result_file):
        os.remove(result_file)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, os.path.abspath(__file__), CHILD_FLAG,
               suite, host, str(port), test, result_file, str(timeout)]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        # A session of its own, so that a timeout kills whatever it started.
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            try:
                os.kill(child.pid, signal.SIGUSR1)  # dump its threads' stacks into the log
                child.wait(timeout=1)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        except BaseException:  # Ctrl-C: leave nothing running
            kill(child)
            raise
        finally:
            if child.poll() is None:
                kill(child)
    seconds = time.monotonic() - started
    try:
        with open(result_file, encoding="utf-8") as f:
            result = json.load(f)
        os.remove(result_file)
        reason = result["reason"]
        if result["outcome"] != "pass":
            reason = where_it_failed(suite, log_path, reason)
        return result["outcome"], seconds, reason
    except (OSError, ValueError, KeyError):
        pass
    if code is None:
        return "timeout", seconds, f"killed after {timeout:g} s, at {stuck_at(suite, log_path)}"
    return "fail", seconds, f"exited with status {code} without a result: {last_line(log_path)}"


def kill(child):
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def read_log(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def where_it_failed(suite, log_path, reason):
    """The suite's own line that failed, from the first traceback in the log through the
    script: client_test.py catches most exceptions, prints them and later asserts
    `succeeded == True`, so unittest's own report says only `False != True`."""
    script = SUITES[suite]
    lines = read_log(log_path).splitlines()
    for start, line in enumerate(lines):
        if line.endswith("Traceback (most recent call last):"):
            location, error = None, None
            for i in range(start + 1, len(lines)):
                text = lines[i]
                if text.startswith("  File "):
                    if f'{os.sep}{script}", line ' in text:
                        number = text.split('", line ')[1].split(",")[0]
                        code = lines[i + 1].strip() if i + 1 < len(lines) else ""
                        location = f"{script}:{number} `{code}`"
                elif text and not text.startswith(" "):
                    error = text.strip()
                    break
            if location and error:
                return f"{location}: {error}"
    return reason


def stuck_at(suite, log_path):
    """Where the main thread of a killed test was, from the stacks faulthandler dumped:
    the innermost frame in the script (faulthandler lists the most recent call first)."""
    script = script_path(suite)
    for line in read_log(log_path).splitlines():
        line = line.strip()
        if line.startswith(f'File "{script}", line '):
            number = int(line.split(", line ")[1].split()[0])
            with open(script, encoding="utf-8") as f:
                code = f.read().splitlines()[number - 1].strip()
            return f"{SUITES[suite]}:{number} `{code}`"
    return "an unknown place"


def last_line(path):
    lines = [line for line in read_log(path).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return None
    except OSError as e:
        return str(e)


def main():
    if len(sys.argv) == 8 and sys.argv[1] == CHILD_FLAG:
        _, _, suite, host, port, test, result_file, timeout = sys.argv
        run_one_test_in_this_process(suite, host, int(port), test, result_file, float(timeout))

    parser = argparse.ArgumentParser(
        usage="%(prog)s SUITE HOST PORT [--timeout S] [--json FILE] [--logs DIR] [TEST ...]\n"
              "       %(prog)s SUITE --list",
        description="Run a Paho MQTT interoperability suite against HOST:PORT, "
                    "each test in its own process under a timeout.")
    parser.add_argument("suite", choices=sorted(SUITES), metavar="SUITE",
                        help="v311 (client_test.py, MQTT 3.1.1) or v5 (client_test5.py, MQTT 5)")
    parser.add_argument("host", metavar="HOST", nargs="?")
    parser.add_argument("port", metavar="PORT", type=int, nargs="?")
    parser.add_argument("tests", metavar="TEST", nargs="*",
                        help="test names (test_basic or Test.test_basic); default: all")
    parser.add_argument("--timeout", type=float, default=60, metavar="S",
                        help="seconds before a test is killed and counted as TIMEOUT (default 60)")
    parser.add_argument("--json", metavar="FILE",
                        help='write {"test_name": "pass"|"fail"|"timeout"} to FILE')
    parser.add_argument("--logs", metavar="DIR",
                        help="keep each test's output as DIR/test_name.log")
    parser.add_argument("--list", action="store_true",
                        help="print the suite's test names, one a line, and run nothing")
    args = parser.parse_intermixed_args()

    known = test_names(args.suite)
    if args.list:
        print("\n".join(known))
        return 0
    if args.host is None or args.port is None:
        parser.error("HOST and PORT are required")
    tests = [t[len("Test."):] if t.startswith("Test.") else t for t in args.tests] or known
    unknown = [t for t in tests if t not in known]
    if unknown:
        parser.exit(2, f"unknown {args.suite} test(s) {', '.join(unknown)}; "
                       f"the tests are: {' '.join(known)}\n")
    problem = reachable(args.host, args.port)
    if problem:
        parser.exit(2, f"cannot connect to {args.host}:{args.port}: {problem}\n")

    print(f"{SUITES[args.suite]} ({args.suite}) against {args.host}:{args.port}: "
          f"{len(tests)} tests, {args.timeout:g} s timeout each", flush=True)
    temporary = None
    log_dir = args.logs
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    else:
        temporary = tempfile.TemporaryDirectory(prefix="paho-")
        log_dir = temporary.name
    width = max(len(t) for t in tests)
    results = {}
    started = time.monotonic()
    try:
        for test in tests:
            outcome, seconds, reason = run_test(args.suite, args.host, args.port, test,
                                                args.timeout, log_dir)
            results[test] = outcome
            line = f"{outcome.upper():<8} {test:<{width}} {seconds:6.1f}s"
            if outcome != "pass" and reason:
                line += "  " + reason[:200]
            print(line, flush=True)
    finally:
        if temporary:
            temporary.cleanup()
    passed = sum(1 for outcome in results.values() if outcome == "pass")
    print(f"passed {passed} of {len(tests)} in {time.monotonic() - started:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, sort_keys=True)
            f.write("\n")
    return 0 if passed == len(tests) else 1


if __name__ == "__main__":
    sys.exit(main())
