"""``python -m kms_host``: the same entry point as the ``kms-host`` console script."""

from kms_host.cli.main import main

raise SystemExit(main())
