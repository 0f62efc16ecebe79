"""`python -m relay`: the command line, as the `relay` script runs it (the supervisor of
`server.workers` starts its workers this way)."""

import sys

from relay.cli import main

sys.exit(main())
