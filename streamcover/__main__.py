"""``python -m streamcover`` is the same as the ``streamcover`` command."""

from streamcover.cli import main

raise SystemExit(main())
