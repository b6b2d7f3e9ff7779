"""``python -m procpool``: the ``procpool`` command."""

from procpool._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
