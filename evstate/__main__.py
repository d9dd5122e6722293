"""``python -m evstate`` runs the command line."""

import sys

from evstate.cli.main import main

sys.exit(main())
