"""`python -m millions` and the `millions` script: `millions edge` goes straight to the
edge's own command line (see `millions.edge.cli` for why), everything else to
`millions.cli`."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["edge"]:
        from millions.edge.cli import main as edge_main

        edge_main()
        return
    from millions.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
