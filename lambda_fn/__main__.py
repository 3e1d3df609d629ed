"""`python -m lambda_fn`: the same as the `hybrid-lambda` command."""

import sys

from lambda_fn.cli import main

if __name__ == "__main__":
    sys.exit(main())
