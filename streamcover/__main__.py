"""``python -m streamcover``: the library's commands only (``streamcover.cli.main``).

The full command, with the Kafka services, is the installed ``streamcover``
(``consumers.cli:main``) or ``python -m consumers``.
"""

from streamcover.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
