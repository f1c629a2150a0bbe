"""Errors a user can fix, and how a stage's main() reports them.

A `UserError` is an expected failure with a complete message: a bad input file, a bad
params.yaml, a missing upstream artifact. `run_main` prints it as `error: <message>` on stderr
and exits 2, with no traceback; anything else is a bug and keeps its traceback. Set
TUNELINE_TRACEBACK=1 to see the traceback of a user error too (a debug switch, not a tunable).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An expected failure the user fixes (input, params, order of stages); the message names where and what to do."""


# a missing file is always the user's to fix, and OS and our own messages both name the path
EXPECTED = (UserError, FileNotFoundError)


def run_main(main: Callable[[], object]) -> None:
    """Call a stage's main(); a user error becomes one `error:` message and exit status 2."""
    try:
        main()
    except EXPECTED as e:
        if os.environ.get("TUNELINE_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
