"""``bench_main.py`` for a scientific program: numpy and scipy.optimize imported at its top.

Like such a program under each start method: fork's workers inherit the modules, a fork server
that preloads ``__main__`` imports them once for all its workers, spawn's workers import them
again.
"""

import bench_heavy  # noqa: F401

if __name__ == "__main__":
    import bench_runner

    bench_runner.main()
