"""`python -m bench.profile_top <profile.txt> [--top 15]`: self and cumulative time from a py-spy profile.

Reads py-spy's collapsed-stack output (`py-spy record --format raw`: one `frame;frame;...;frame count` line
per distinct stack, root first) and prints the functions with the most samples as the innermost frame (self
time) and on the stack at all (cumulative time, each function counted once per stack), as shares of all
samples. Frames are grouped by function and file, line numbers dropped.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import sys
from collections.abc import Iterable, Sequence

_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"\((?:.*/)?(site-packages|lib/python3\.\d+)/")


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`; library paths shortened to site-packages/..."""
    frame = _LINE.sub(")", frame.strip())
    frame = _SITE.sub(lambda m: "(" + ("stdlib/" if m.group(1).startswith("lib") else ""), frame)
    return frame.replace(str(pathlib.Path.cwd()) + "/", "")


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        stacks.append(([frame_name(f) for f in stack.split(";") if f], n))
    return stacks


def summarise(
    stacks: list[tuple[list[str], int]],
) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    total = 0
    own: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            cumulative[f] += n
    return total, own, cumulative


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_top", description=__doc__)
    parser.add_argument("profile", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--match", default="", help="cumulative list: only frames containing this text")
    args = parser.parse_args(argv)
    total, own, cumulative = summarise(parse(args.profile.read_text().splitlines()))
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    print(f"\nself time (top {args.top})")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f} %  {name}")
    print(f"\ncumulative (top {args.top}{', matching ' + repr(args.match) if args.match else ''})")
    picked = [(k, v) for k, v in cumulative.most_common() if args.match in k][: args.top]
    for name, n in picked:
        print(f"{100 * n / total:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
