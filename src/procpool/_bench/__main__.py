"""``python -m procpool._bench``: the benchmark suite."""

from procpool._bench import main

raise SystemExit(main())
