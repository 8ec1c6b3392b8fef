"""``python -m streamcover``: for now still the full command, as before the service split.

Transitional, and the one file under ``streamcover/`` that names the service package: the
monitor's supervisor (``consumers/workers.py``) and its end-to-end tests still start
``python -m streamcover monitor|send|mic|setlist``. Once they start ``python -m consumers``
(the module form of the ``streamcover`` command), this file runs ``streamcover.cli.main``,
the library's commands only. No module imports it.
"""

from consumers.cli import main

raise SystemExit(main())
