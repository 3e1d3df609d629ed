"""`python -m local_stack`: the same as the `hybrid-local` command."""

import sys

from local_stack.cli import main

sys.exit(main())
