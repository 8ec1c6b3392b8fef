"""``python -m consumers`` is the same as the ``streamcover`` command."""

from consumers.cli import main

raise SystemExit(main())
