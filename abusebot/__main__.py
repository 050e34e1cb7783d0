"""``python -m abusebot``: the same as the ``abusebot`` command."""

import sys

from abusebot.cli import main

sys.exit(main())
