"""A sample's process, started as a script the way a user's program is: ``bench_main.py SPEC``.

Under spawn and forkserver the workers may import the main script again (the standard library's
fork server preloads it), so its top level imports nothing: the runner only under the guard.
"""

if __name__ == "__main__":
    import bench_runner

    bench_runner.main()
