"""`python -m unidb.sql PATH "query"` (one statement) or `python -m unidb.sql PATH` (shell)."""
import sys

from unidb.sql.cli import main

sys.exit(main())
