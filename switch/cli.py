"""`switch`: the one command for operators, wallet engineers and core profilers.

Each command group lives in its own module under switch/commands/ and is
registered here, so `switch --help` lists everything the switch can do.
"""
from __future__ import annotations

import importlib

import click

from switch import __version__

# (module under switch.commands, attribute holding the click command or group)
COMMAND_MODULES = [
    ("serve", "serve"),
    ("pay", "pay"),
    ("ledger", "ledger"),
    ("rules", "rules"),
    ("qr", "qr"),
    ("bench", "bench"),
    ("stats", "stats"),
    ("review", "review"),
    ("replay", "replay"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="switch")
def main() -> None:
    """A QR payment switch: serve wallets, inspect the ledger, validate QR codes, run load."""


def _register() -> None:
    for module_name, attribute in COMMAND_MODULES:
        module = importlib.import_module(f"switch.commands.{module_name}")
        main.add_command(getattr(module, attribute))


_register()

if __name__ == "__main__":
    main()
