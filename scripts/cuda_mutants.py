#!/usr/bin/env python3
"""Mutation testing of the CUDA device code: do the emulated kernel tests bite?

Finds mutation sites in csrc/cuda/kernels/*.cuh by itself (nothing is hard-coded, so it
can be rerun on rewritten kernels), makes one mutant per site, rebuilds only the emulated
test binaries that include the mutated header (a dedicated ninja build of a scratch copy
of the sources, torch-free: SSD_FAST_EMULATOR_ONLY), runs them through ctest with a
timeout, quick subset first, and stops at the first failing test. Mutants:

- barrier: one ``__syncthreads()`` deleted (every one);
- bound: one comparison flipped, ``<`` <-> ``<=`` and ``>`` <-> ``>=``, in device code
  (``__global__`` / ``__device__`` / ``SSD_FAST_HOST_DEVICE`` functions);
- off_by_one: one ``+ 1`` or ``- 1`` term dropped, in device code (not in array
  extents, whose ``+ 1`` is bank-conflict padding).

The tests are those ctest runs in CI, sanitizer builds included (--no-sanitizers skips
them, for a faster first look).

A mutant is *killed* when some test fails (a wrong result, a stopped run, a timeout),
*survived* when all the affected tests pass, *stillborn* when it does not compile.

Not part of CI (a full run takes about 15 minutes on a 2-core VM). Examples:

    python scripts/cuda_mutants.py --list
    python scripts/cuda_mutants.py --json /tmp/mutants.json --markdown /tmp/mutants.md
    python scripts/cuda_mutants.py --only per_sample_sq.cuh:63
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = "csrc/cuda/kernels"
# The torch-free emulated tests, in the stages a mutant meets them: the quick subset, then
# the full tests, then the quick subset under AddressSanitizer+UBSan and ThreadSanitizer
# (which see out-of-bounds accesses and races that change no result). Each stage is built
# only when the mutant survived the one before.
STAGES = [
    ["test_emulated_quick"],
    ["test_emulator", "test_per_sample_kernels", "test_multi_tensor_kernels"],
    ["test_emulated_quick_asan", "test_emulated_quick_tsan"],
]
DEVICE_MARKERS = ("__global__", "__device__", "SSD_FAST_HOST_DEVICE")
BOUND_FLIPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
# A comparison is written with spaces around it (clang-format style); template brackets
# (std::min<int64_t>, static_cast<float>) and shifts are not.
COMPARISON = re.compile(r"(?<=\s)(<=|>=|<|>)(?=\s)")
# Not in an array extent ([kTile + 1]): that is padding against bank conflicts, and
# dropping it changes speed, not results (an equivalent mutant).
OFF_BY_ONE = re.compile(r"\s[+-] 1\b(?![.\d\]])")


@dataclasses.dataclass
class Mutant:
    path: str  # relative to the repo root
    line: int  # 1-based
    kind: str
    before: str  # the whole source line, stripped
    after: str
    column: int  # 0-based start of the change in the line
    old: str
    new: str

    @property
    def site(self) -> str:
        return f"{Path(self.path).name}:{self.line}"

    @property
    def change(self) -> str:
        if self.kind == "barrier":
            return "delete __syncthreads()"
        return f"`{self.old.strip()}` -> `{self.new.strip() or '(dropped)'}`"


def code_part(line: str) -> str:
    """The line without its // comment, same length prefix (columns stay valid)."""
    at = line.find("//")
    return line if at < 0 else line[:at]


def device_lines(lines: list[str]) -> set[int]:
    """0-based indices of lines inside device functions: from a line naming a device
    marker, through the function's balanced braces."""
    inside: set[int] = set()
    i = 0
    while i < len(lines):
        code = code_part(lines[i])
        if not any(m in code for m in DEVICE_MARKERS) or code.lstrip().startswith("#"):
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            for ch in code_part(lines[j]):
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            inside.add(j)
            if (opened and depth <= 0) or (not opened and code_part(lines[j]).rstrip().endswith(";")):
                break
            j += 1
        i = j + 1
    return inside


def find_mutants(paths: list[Path]) -> list[Mutant]:
    mutants: list[Mutant] = []
    for path in paths:
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        device = device_lines(lines)
        for i, line in enumerate(lines):
            code = code_part(line)
            for m in re.finditer(r"__syncthreads\(\);", code):
                mutants.append(Mutant(rel, i + 1, "barrier", line.strip(), "", m.start(), m.group(0), ""))
            if i not in device or code.lstrip().startswith("#"):
                continue
            for m in COMPARISON.finditer(code):
                op = m.group(1)
                mutants.append(Mutant(rel, i + 1, "bound", line.strip(), "", m.start(), op, BOUND_FLIPS[op]))
            for m in OFF_BY_ONE.finditer(code):
                mutants.append(Mutant(rel, i + 1, "off_by_one", line.strip(), "", m.start(), m.group(0), ""))
    for mu in mutants:
        text = (ROOT / mu.path).read_text().splitlines()[mu.line - 1]
        mu.after = (text[: mu.column] + mu.new + text[mu.column + len(mu.old) :]).strip()
    return mutants


def apply(source: Path, mu: Mutant, original: str) -> None:
    lines = original.split("\n")
    line = lines[mu.line - 1]
    assert line[mu.column : mu.column + len(mu.old)] == mu.old, (mu.site, mu.old)
    lines[mu.line - 1] = line[: mu.column] + mu.new + line[mu.column + len(mu.old) :]
    source.write_text("\n".join(lines))


def run(cmd: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """cmd in a process group of its own, which is killed when cmd returns or times out:
    a mutant that loops forever must not outlive its test (ctest's timeout alone left
    such tests running)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


class Workspace:
    """A scratch copy of the sources and its ninja build of the emulated tests."""

    def __init__(self, where: Path, jobs: int, sanitizers: bool):
        self.src, self.build, self.jobs = where / "src", where / "build", jobs
        if self.src.exists():
            shutil.rmtree(self.src)
        for part in ("csrc", "tests/emulator", "CMakeLists.txt"):
            target = self.src / part
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / part).is_dir():
                shutil.copytree(ROOT / part, target)
            else:
                shutil.copy2(ROOT / part, target)
        configure = run(
            ["cmake", "-S", str(self.src), "-B", str(self.build), "-G", "Ninja", "-DSSD_FAST_EMULATOR_ONLY=ON",
             f"-DSSD_FAST_SANITIZERS={'ON' if sanitizers else 'OFF'}"]
        )  # fmt: skip
        if configure.returncode != 0:
            sys.exit(f"cmake configure failed:\n{configure.stdout}\n{configure.stderr}")

    def compile(self, targets: list[str]) -> subprocess.CompletedProcess:
        return run(["ninja", "-C", str(self.build), f"-j{self.jobs}", *targets])

    def headers_of(self, target: str) -> set[str]:
        """The kernel headers (repo-relative) that a built target's object includes."""
        deps = run(["ninja", "-C", str(self.build), "-t", "deps"]).stdout
        found, current = set(), None
        for line in deps.splitlines():
            if not line.startswith(" "):
                current = line.split(":")[0]
                continue
            if current and f"/{target}.dir/" in current:
                p = Path(line.strip()).resolve()
                if self.src.resolve() in p.parents:
                    found.add(str(p.relative_to(self.src.resolve())))
        return found

    def ctest(self, target: str, timeout: float) -> tuple[bool, str]:
        """(passed, why it failed) for one emulated test."""
        cmd = ["ctest", "--test-dir", str(self.build), "-R", f"^emulated_{target}$", "--timeout", str(int(timeout)),
               "--output-on-failure"]  # fmt: skip
        try:
            r = run(cmd, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            return False, "timeout"
        if r.returncode == 0:
            return True, ""
        out = r.stdout + r.stderr
        if "Timeout" in out:
            return False, "timeout"
        for pattern in (
            r"cuda emulator: [^\n]*",
            r"FAIL [^\n]*",
            r"SUMMARY: \w+Sanitizer: [^\n]*",
            r"runtime error: [^\n]*",
        ):
            m = re.search(pattern, out)
            if m:
                return False, m.group(0)[:110]
        return False, "non-zero exit"


def evaluate(ws: Workspace, mu: Mutant, stages: list[list[str]], timeouts: dict[str, float]) -> dict:
    source = ws.src / mu.path
    original = source.read_text()
    started = time.time()
    result = {"status": "survived", "test": "", "why": ""}
    try:
        apply(source, mu, original)
        # the quick subset alone first: most mutants die there, before the big builds
        for stage in stages:
            built = ws.compile(stage)
            if built.returncode != 0:
                result = {"status": "stillborn", "test": "", "why": "does not compile"}
                break
            for target in stage:
                passed, why = ws.ctest(target, timeouts.get(target, 300))
                if not passed:
                    result = {"status": "killed", "test": target, "why": why}
                    break
            if result["status"] != "survived":
                break
    finally:
        source.write_text(original)
    result["seconds"] = round(time.time() - started, 1)
    return result


def markdown(mutants: list[Mutant], results: list[dict]) -> str:
    rows = ["| # | mutant | kind | change | result | test | detail |", "|---|---|---|---|---|---|---|"]
    for i, (mu, r) in enumerate(zip(mutants, results), 1):
        why = r["why"].replace("|", "\\|")
        rows.append(f"| {i} | {mu.site} | {mu.kind} | {mu.change} | {r['status']} | {r['test']} | {why} |")
    return "\n".join(rows)


def summary(mutants: list[Mutant], results: list[dict]) -> str:
    lines = []
    for kind in ("barrier", "bound", "off_by_one", "all"):
        rs = [r for mu, r in zip(mutants, results) if kind in ("all", mu.kind) and r["status"] != "stillborn"]
        killed = sum(r["status"] == "killed" for r in rs)
        if rs:
            lines.append(f"{kind:10s}: {killed}/{len(rs)} killed ({100 * killed / len(rs):.0f}%)")
    stillborn = sum(r["status"] == "stillborn" for r in results)
    lines.append(f"stillborn (did not compile, not counted): {stillborn}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default=f"{KERNELS}/*.cuh", help="glob of headers to mutate (repo-relative)")
    ap.add_argument("--only", action="append", default=[], help="run only mutants whose file:line contains this")
    ap.add_argument("--kinds", default="barrier,bound,off_by_one")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--workdir", default="/tmp/ssd_fast_mutants", help="scratch copy and build (reused)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick-timeout", type=float, default=30, help="seconds for the quick subset")
    ap.add_argument("--timeout", type=float, default=180, help="seconds for each full test")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--no-sanitizers", action="store_true", help="skip the sanitizer stage")
    args = ap.parse_args()
    stages = STAGES[:-1] if args.no_sanitizers else STAGES
    tests = [t for stage in stages for t in stage]

    paths = sorted(ROOT.glob(args.files))
    kinds = set(args.kinds.split(","))
    mutants = [m for m in find_mutants(paths) if m.kind in kinds]
    if args.only:
        mutants = [m for m in mutants if any(o in m.site for o in args.only)]
    if args.list:
        for mu in mutants:
            print(f"{mu.site:28s} {mu.kind:10s} {mu.change:28s} {mu.after}")
        print(f"{len(mutants)} mutants")
        return 0

    t0 = time.time()
    ws = Workspace(Path(args.workdir), args.jobs, not args.no_sanitizers)
    print(f"baseline: building {len(tests)} emulated tests in {ws.build} ...", flush=True)
    if ws.compile(tests).returncode != 0:
        sys.exit("the unmutated tests do not build")
    timeouts = {t: args.timeout for t in tests} | {"test_emulated_quick": args.quick_timeout}
    for target in tests:
        passed, why = ws.ctest(target, timeouts[target])
        if not passed:
            sys.exit(f"the unmutated code fails {target}: {why}")
    headers = {t: ws.headers_of(t) for t in tests}
    print(f"baseline passes ({time.time() - t0:.0f} s); {len(mutants)} mutants", flush=True)

    results = []
    for i, mu in enumerate(mutants, 1):
        affected = [[t for t in stage if mu.path in headers[t]] for stage in stages]
        affected = [stage for stage in affected if stage]
        r = (
            evaluate(ws, mu, affected, timeouts)
            if affected
            else {"status": "survived", "test": "", "why": "no test includes it", "seconds": 0}
        )
        results.append(r)
        print(f"[{i}/{len(mutants)}] {mu.site:26s} {mu.kind:10s} {mu.change:26s} {r['status']:9s} {r['test']:26s} "
              f"{r['why'][:60]} ({r['seconds']} s)", flush=True)  # fmt: skip
    # the scratch build now holds the last mutant's objects; the next run rebuilds them
    table, totals = markdown(mutants, results), summary(mutants, results)
    print("\n" + table + "\n\n" + totals + f"\ntotal time {time.time() - t0:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n\n" + totals + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps([dataclasses.asdict(m) | r for m, r in zip(mutants, results)], indent=1)
        )  # fmt: skip
    survivors = [m for m, r in zip(mutants, results) if r["status"] == "survived"]
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
