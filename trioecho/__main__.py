"""``python -m trioecho``: see ``trioecho.cli``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
