"`python -m sslmed <command>`: the same as the `sslmed` command (hand-written, not generated)."
from sslmed.cli import main

raise SystemExit(main())
