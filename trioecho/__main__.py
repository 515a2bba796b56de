"""``python -m trioecho``: see ``trioecho.cli.main``."""

from trioecho.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
