"""The benchmark suite, one command: procpool against multiprocessing.Pool and its peers.

    python benchmarks/run.py                 # every installed library, the issue's sizes
    python benchmarks/run.py --quick         # seconds: small sizes, procpool and the stdlib
    python benchmarks/run.py --write-docs    # also rewrite docs/benchmarks.md and its plot

``--help`` lists the rest. The peers come with ``pip install -e '.[bench]'``.
"""

from procpool._bench import main

if __name__ == "__main__":
    raise SystemExit(main())
