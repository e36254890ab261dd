"""`python -m tcp_lld`."""

import sys

from .cli import main

sys.exit(main())
