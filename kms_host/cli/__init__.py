"""The ``kms-host`` command line: one module per group of subcommands; nothing else imports it."""
