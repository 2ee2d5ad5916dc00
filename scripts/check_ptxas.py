#!/usr/bin/env python3
"""Checks the ptxas reports that build.rs saves (`-Xptxas -v`, one file per kernel file and target:
OUT_DIR/ptxas-<kernel>-<arch>.txt) and fails when a hot kernel spills registers to local memory or
has a stack frame: on the decode path those turn into extra memory traffic on every token.

    scripts/check_ptxas.py [DIR ...] [--hot NAME ...]

DIR defaults to the newest build output of the edgellm crate that holds reports, under
${CARGO_TARGET_DIR:-target}/{release,debug}/build/edgellm-*/out. NAME is an `extern "C"` entry
point; the default list is HOT below. A hot kernel missing from every report is an error too (a
renamed kernel must not silently leave the check). Prints one row per entry point and target.
Standard library only, so CI needs nothing but python3.
"""

import argparse
import glob
import os
import re
import sys

# Entry points on the per-token path (issue 5: decode attention, quantized matrix-vector, norm,
# RoPE/KV write). Names are added here as their kernels land.
HOT = ["rmsnorm_f32"]

REPORT = re.compile(r"^ptxas-(?P<kernel>.+)-(?P<arch>sm_\d+[af]?)\.txt$")
ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>[^']+)'")
FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
REGS = re.compile(r"Used (?P<regs>\d+) registers")


def find_default_dir():
    """The most recently written build output directory that holds ptxas reports."""
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    dirs = [d for d in glob.glob(os.path.join(target, "*", "build", "edgellm-*", "out")) if glob.glob(os.path.join(d, "ptxas-*.txt"))]
    dirs += [d for d in glob.glob(os.path.join(target, "*", "*", "build", "edgellm-*", "out")) if glob.glob(os.path.join(d, "ptxas-*.txt"))]
    if not dirs:
        sys.exit(f"check_ptxas: no ptxas reports under {target}; build with --features cuda and nvcc first")
    return max(dirs, key=lambda d: max(os.path.getmtime(f) for f in glob.glob(os.path.join(d, "ptxas-*.txt"))))


def parse(path):
    """Rows (entry, arch, registers, spill stores, spill loads, stack) of one report.

    ptxas prints, per entry point: "Compiling entry function 'X' for 'sm_Y'", then "Function
    properties for X" followed by the stack/spill line, then "Used N registers". Properties of
    device functions that were not inlined come without a "Compiling" line and are skipped: their
    frame shows up in the entry's own stack figure.
    """
    rows = []
    current = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = ENTRY.search(line)
            if m:
                current = {"name": m["name"], "arch": m["arch"], "regs": None, "stores": None, "loads": None, "stack": None}
                rows.append(current)
                continue
            if current is None:
                continue
            m = FRAME.search(line)
            if m and current["stack"] is None:
                current.update(stack=int(m["stack"]), stores=int(m["stores"]), loads=int(m["loads"]))
                continue
            m = REGS.search(line)
            if m and current["regs"] is None:
                current["regs"] = int(m["regs"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="*", help="directories holding ptxas-*.txt")
    ap.add_argument("--hot", nargs="+", default=HOT, help="entry points that must be spill- and stack-free")
    args = ap.parse_args()

    dirs = args.dirs or [find_default_dir()]
    reports = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "ptxas-*.txt"))):
            if REPORT.match(os.path.basename(path)):
                reports.append(path)
    if not reports:
        sys.exit(f"check_ptxas: no ptxas-<kernel>-<arch>.txt in {', '.join(dirs)}")

    rows = []
    failures = []
    for path in reports:
        kernel = REPORT.match(os.path.basename(path))["kernel"]
        parsed = parse(path)
        if not parsed:
            failures.append(f"{path}: no entry function found (was it built with -Xptxas -v?)")
        for r in parsed:
            r["file"] = kernel
            rows.append(r)
            if None in (r["regs"], r["stack"]):
                failures.append(f"{r['name']} ({r['arch']}): report incomplete in {path}")

    hot = set(args.hot)
    print(f"{'kernel file':<14} {'entry point':<28} {'arch':<8} {'regs':>5} {'spill st':>9} {'spill ld':>9} {'stack':>6}  hot")
    for r in sorted(rows, key=lambda r: (r["file"], r["name"], r["arch"])):
        is_hot = r["name"] in hot
        print(f"{r['file']:<14} {r['name']:<28} {r['arch']:<8} {r['regs'] or 0:>5} {r['stores'] or 0:>9} {r['loads'] or 0:>9} {r['stack'] or 0:>6}  {'yes' if is_hot else ''}")
        if is_hot and ((r["stores"] or 0) > 0 or (r["loads"] or 0) > 0 or (r["stack"] or 0) > 0):
            failures.append(f"{r['name']} ({r['arch']}): {r['stores']} bytes spill stores, {r['loads']} bytes spill loads, {r['stack']} bytes stack frame")

    seen = {r["name"] for r in rows}
    for name in sorted(hot - seen):
        failures.append(f"hot kernel {name} is in no report")

    if failures:
        print("\ncheck_ptxas: FAILED", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"\ncheck_ptxas: ok ({len(rows)} entry points in {len(reports)} reports, {len(hot)} hot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
