"""Mutation testing of the library's math: apply each mutation of catalog.py in turn to a copy of
the repository, run the tests named for it, and report the mutations no test caught.

    python -m tests.mutations                      # every mutation, one pytest at a time
    python -m tests.mutations --list               # the catalog, nothing run
    python -m tests.mutations --only rope-rotation-sign dropout-scale
    python -m tests.mutations --timeout 300 --jobs 1 --no-baseline

The working tree is never written to: its files (`git ls-files`, untracked ones included, ignored
ones not) are copied once into a temporary directory, the copy comes first on PYTHONPATH, and
every pytest runs there. Before anything else every selected snippet must occur exactly once in
its file; then, unless `--no-baseline`, the selected tests run once unmutated and must pass.

Result of a mutation: caught (pytest failed), survived (pytest passed), timeout (killed after
`--timeout` seconds), error (pytest could not run: collection error, no such test, ...). Exit
status 0 when every mutation was caught, 1 otherwise, 2 when the catalog or the copy is broken.
"""

import argparse
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .catalog import MUTATIONS, Mutation

REPO = Path(__file__).resolve().parents[2]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]


def copy_repository(dest: Path) -> None:
    """The working tree's tracked and untracked, not ignored, files (as they are now) into dest."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        src, target = REPO / os.fsdecode(name), dest / os.fsdecode(name)
        if src.is_symlink():  # kept a link (jaxformer/configs -> ../configs), pointing into the copy
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(src))
        elif src.is_file():  # not: deleted in the working tree, or a submodule
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def snippet_problem(mutation: Mutation, root: Path) -> str | None:
    """Why `mutation` cannot be applied under `root`, or None."""
    path = root / mutation.file
    if not path.is_file():
        return f"{mutation.id}: {mutation.file} does not exist"
    count = path.read_text().count(mutation.old)
    if count != 1:
        return f"{mutation.id}: the snippet occurs {count} times in {mutation.file}, not once:\n{mutation.old}"
    if mutation.old == mutation.new:
        return f"{mutation.id}: the replacement equals the snippet"
    return None


def environment(copy: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy)] + [p for p in [env.get("PYTHONPATH")] if p])
    # A mutated file and its restored original can share size and mtime second: no bytecode.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # One persistent XLA cache for every run (keyed by the compiled program: a mutated program
    # misses it); the tests' conftest keeps an existing setting.
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    return env


def check_import(copy: Path, env: dict) -> None:
    """The copy's jaxformer is the one imported (the editable install points at the original)."""
    out = subprocess.run([sys.executable, "-c", "import jaxformer; print(jaxformer.__file__)"],
                         cwd=copy, env=env, capture_output=True, text=True)
    location = Path(out.stdout.strip() or "?").resolve()
    if out.returncode or not location.is_relative_to(copy.resolve()):
        sys.exit(f"jaxformer imports from {location}, not from the copy {copy}:\n{out.stderr}")


def run_pytest(tests, copy: Path, env: dict, timeout: float) -> tuple[str, float, str]:
    """(result, seconds, output) of one pytest process over `tests` in the copy."""
    start = time.monotonic()
    proc = subprocess.Popen(PYTEST + list(tests), cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        result = {0: "survived", 1: "caught"}.get(proc.returncode, "error")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and whatever it started, nothing else
        output, _ = proc.communicate()
        result = "timeout"
    return result, time.monotonic() - start, output


def mutate_and_test(mutation: Mutation, copy: Path, env: dict, timeout: float):
    problem = snippet_problem(mutation, copy)
    if problem:  # the copy is what gets mutated: a snippet that missed there would "survive"
        return "error", 0.0, problem
    path = copy / mutation.file
    original = path.read_text()
    path.write_text(original.replace(mutation.old, mutation.new, 1))
    try:
        return run_pytest(mutation.tests, copy, env, timeout)
    finally:
        path.write_text(original)


def tail(output: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in output.rstrip().splitlines()[-lines:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=1,
                        help="pytest processes at once, each in its own copy (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds one mutation's tests may take (default 300)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the selected tests unmutated first")
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTATIONS]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        print(f"duplicate mutation ids: {duplicates}", file=sys.stderr)
        return 2
    selected = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            print(f"unknown mutation ids: {unknown} (see --list)", file=sys.stderr)
            return 2
        selected = [m for m in MUTATIONS if m.id in args.only]
    if args.list:
        for m in selected:
            print(f"{m.id:40} {m.kind:16} {m.file}  ->  {' '.join(m.tests)}")
        print(f"{len(selected)} mutations")
        return 0

    problems = [p for m in selected if (p := snippet_problem(m, REPO))]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="jaxformer-mutations-") as tmp:
        tmp = Path(tmp)
        jobs = max(1, min(args.jobs, len(selected)))
        copies = [tmp / f"copy{i}" for i in range(jobs)]
        for copy in copies:
            copy_repository(copy)
        env = environment(copies[0], tmp / "xla-cache")
        check_import(copies[0], env)
        print(f"{len(selected)} mutations; copies of {REPO} under {tmp}", flush=True)

        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in selected for t in m.tests))
            result, seconds, output = run_pytest(tests, copies[0], env, args.timeout * 4)
            print(f"baseline: {len(tests)} test selections unmutated, {seconds:.0f} s: "
                  f"{ {'survived': 'pass', 'caught': 'FAILED'}.get(result, result)}", flush=True)
            if result != "survived":
                print(tail(output, 40), file=sys.stderr)
                return 2

        free = list(copies)
        rows = {}

        def work(mutation):
            copy = free.pop()
            try:
                return mutation, *mutate_and_test(mutation, copy, environment(copy, tmp / "xla-cache"),
                                                  args.timeout)
            finally:
                free.append(copy)

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for mutation, result, seconds, output in pool.map(work, selected):
                rows[mutation.id] = (mutation, result, seconds)
                print(f"{mutation.id:40} {result:8} {seconds:6.1f} s", flush=True)
                if result in ("survived", "error"):
                    print(tail(output, 8 if result == "survived" else 25), flush=True)
        total = time.monotonic() - start

    print()
    print(f"{'id':40} {'kind':16} {'result':8} {'seconds':>7}  tests")
    for mutation, result, seconds in (rows[m.id] for m in selected):
        tests = " ".join(t.replace("tests/", "", 1) for t in mutation.tests)
        print(f"{mutation.id:40} {mutation.kind:16} {result:8} {seconds:7.1f}  {tests}")
    counts = {r: sum(row[1] == r for row in rows.values())
              for r in ("caught", "survived", "timeout", "error")}
    print(f"\n{len(rows)} mutations: " + ", ".join(f"{n} {r}" for r, n in counts.items())
          + f"; {total / 60:.1f} min")
    bad = [m.id for m, result, _ in rows.values() if result != "caught"]
    if bad:
        print("not caught: " + " ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
