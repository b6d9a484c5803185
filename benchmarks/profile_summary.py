"""Summarise py-spy speedscope profiles: the functions with the most samples.

    python -m benchmarks.profile_summary FILE.speedscope.json [--top N] [--match TEXT]

Prints, per function, the share of samples in which it is on the stack
(inclusive) and at the top of the stack (self), over all sampled threads.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def summarise(document: dict[str, Any]) -> tuple[int, Counter[str], Counter[str]]:
    frames = [
        f"{frame['name']} ({Path(frame.get('file', '?')).name}:{frame.get('line', '?')})"
        for frame in document["shared"]["frames"]
    ]
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for profile in document["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            names = {frames[index] for index in stack}
            for name in names:
                inclusive[name] += weight
            if stack:
                own[frames[stack[-1]]] += weight
    return total, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--match", default="", help="only functions whose name or file contains TEXT"
    )
    args = parser.parse_args()
    total, inclusive, own = summarise(json.loads(args.file.read_text()))
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        rows = [(name, count) for name, count in counter.most_common() if args.match in name][
            : args.top
        ]
        for name, count in rows:
            print(f"{count / max(total, 1):6.1%}  {name}")


if __name__ == "__main__":
    main()
