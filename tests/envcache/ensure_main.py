"""Call EnvCache.ensure() in a process of its own: ``python -m tests.envcache.ensure_main ARGS``.

ARGS is one JSON object: root, lockfile, find_links, counter, pause, and optionally barrier
(a path: announce readiness next to it, then wait until it exists). Prints the env's key, path
inode, and the seconds ensure() took as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from tests.envcache.builders import CountingUvBuilder

PYTHON = "/usr/bin/python3.11"


def main() -> None:
    args = json.loads(sys.argv[1])
    builder = CountingUvBuilder(Path(args["counter"]), pause=args.get("pause", 0.0))
    cache = EnvCache(args["root"], builder=builder, find_links=args["find_links"], offline=True)
    lock, python = cache.load_lock(args["lockfile"]), Interpreter.probe(PYTHON)
    if args.get("barrier"):  # start ensure() together with the test's other processes
        barrier = Path(args["barrier"])
        barrier.with_name(f"{barrier.name}.{os.getpid()}").touch()
        while not barrier.exists():
            time.sleep(0.005)
    started = time.monotonic()
    env = cache.ensure(lock, python)
    seconds = time.monotonic() - started
    inode = env.path.stat().st_ino
    print(json.dumps({"key": env.key, "path": str(env.path), "inode": inode, "seconds": seconds}))


if __name__ == "__main__":
    main()
