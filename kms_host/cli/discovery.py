"""``kms-host dns-record``: the ``_vlmcs._tcp`` SRV record for DNS servers labs run.

Prints the record as a zone-file line, a dnsmasq line, an unbound line and the Windows
``Add-DnsServerResourceRecord`` command, or all four as one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from kms_host.discovery.records import format_records

__all__ = ["register"]

_LABELS = {
    "zone_file": "zone file",
    "dnsmasq": "dnsmasq",
    "unbound": "unbound",
    "powershell": "Windows DNS (PowerShell)",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dns-record`` subcommand."""
    parser = commands.add_parser("dns-record", help="print the _vlmcs._tcp SRV record")
    parser.add_argument("--zone", required=True, help="the DNS zone, e.g. lab.example")
    parser.add_argument("--target", help="host name clients connect to (default kms.<zone>)")
    parser.add_argument("--port", type=int, default=1688, help="KMS port (default 1688)")
    parser.add_argument("--priority", type=int, default=0, help="SRV priority (default 0)")
    parser.add_argument("--weight", type=int, default=0, help="SRV weight (default 0)")
    parser.add_argument("--ttl", type=int, default=3600, help="TTL in seconds (default 3600)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        records = format_records(
            args.zone,
            args.target,
            port=args.port,
            priority=args.priority,
            weight=args.weight,
            ttl=args.ttl,
        )
    except ValueError as exc:
        print(f"kms-host dns-record: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for key, line in records.items():
        print(f"# {_LABELS[key]}\n{line}\n")
    return 0
