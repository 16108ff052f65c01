"""`switch replay`: run an input log (`switch serve --input-log`) through a fresh engine, print the state hash."""
from __future__ import annotations

import json
import sys

import click


@click.command("replay")
@click.argument("log_path", metavar="LOG", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="A data directory holding what the logging switch started from: empty when it started fresh, "
                   "else a backup taken when the log began.  Replay writes its ledger here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def replay(log_path: str, data_dir: str, as_json: bool) -> None:
    """Replay LOG deterministically; the state hash equals the logging switch's at the log's end."""
    from switch import inputlog
    from switch.storage import StorageError

    try:
        report = inputlog.replay(log_path, data_dir)
    except (inputlog.InputLogError, StorageError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(report.__dict__))
    else:
        click.echo(f"state hash {report.state_hash}: {report.batches} batches, {report.requests} requests replayed")
        if report.tail_bytes_ignored:
            click.echo(f"  the last {report.tail_bytes_ignored} bytes are an incomplete record (cut by a crash): ignored")
        for mismatch in report.code_mismatches:
            click.echo(f"  differs: {mismatch}")
        if report.code_mismatch_count:
            click.echo(f"  {report.code_mismatch_count} answers differ from the logged ones")
    sys.exit(1 if report.code_mismatch_count else 0)
