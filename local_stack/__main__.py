"""`python -m local_stack`: the same as the `hybrid-local` command."""

import sys

from local_stack.cli import main

# The guard matters: the emulator's workers are spawned, and spawn imports this module again.
if __name__ == "__main__":
    sys.exit(main())
