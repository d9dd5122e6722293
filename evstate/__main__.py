"""``python -m evstate`` runs the command line."""

import sys

from evstate.cli import main

sys.exit(main())
