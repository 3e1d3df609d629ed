"""`python -m watcher`: the same as the `hybrid-watcher` command."""

from watcher.cli import main

raise SystemExit(main())
