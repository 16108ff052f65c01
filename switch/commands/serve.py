"""`switch serve`: run the switch for wallets over TCP until SIGTERM/SIGINT (SIGHUP re-reads
the rules file), with Prometheus metrics on their own port and text or JSON logs."""
from __future__ import annotations

import logging

import click

from switch import logging_setup


@click.command("serve")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="TOML file: participants, ledgers, accounts, merchants.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="LMDB data directory.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7878, show_default=True, type=click.IntRange(0, 65535))
@click.option("--durability", default="fsync", show_default=True, type=click.Choice(["fsync", "os"]),
              help="fsync: an answer means on disk; os: in the OS page cache (survives a process crash only).")
@click.option("--loop", "loop_kind", default="uvloop", show_default=True, type=click.Choice(["uvloop", "asyncio"]))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Server certificate (PEM) to enable TLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Server private key (PEM).")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA (PEM) that must sign every client certificate; makes client certificates mandatory.")
@click.option("--metrics-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on http://HOST:PORT/metrics; 0 = off.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics port binds.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(logging_setup.LEVELS))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(logging_setup.FORMATS),
              help="text for a terminal, json for one JSON object per line (a log collector).")
@click.option("--input-log", "input_log_path", type=click.Path(dir_okay=False),
              help="Record every committed batch to this new file (and the starting state to FILE.base) "
                   "for `switch replay`.")
def serve(config_path, data_dir, host, port, durability, loop_kind, tls_cert, tls_key, tls_client_ca,
          metrics_port, metrics_host, log_level, log_format, input_log_path) -> None:
    """Serve wallets on HOST:PORT with the participants and accounts of --config."""
    logging_setup.configure(log_level, log_format)
    run(config_path, data_dir, host, port, durability, loop_kind, tls_cert, tls_key, tls_client_ca,
        metrics_port=metrics_port, metrics_host=metrics_host, input_log_path=input_log_path)


def run(config_path: str, data_dir: str, host: str, port: int, durability: str = "fsync",
        loop_kind: str = "uvloop", tls_cert: str | None = None, tls_key: str | None = None,
        tls_client_ca: str | None = None, on_ready=None, metrics_port: int = 0,
        metrics_host: str = "127.0.0.1", on_metrics=None, metrics_optional: bool = False,
        input_log_path: str | None = None) -> None:
    """Open the engine, serve until a signal, close the storage. Also used by switch.demo.
    `on_metrics((host, port))` is told where the metrics are served (when metrics_port is not 0).
    A metrics port that cannot be bound stops the switch, unless `metrics_optional` (the demo)."""
    from switch import config as config_module
    from switch.operations import open_engine
    from switch.server import Server, new_event_loop, serve_forever, tls_context

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        config = config_module.load(config_path)
    except config_module.ConfigError as error:
        raise click.ClickException(str(error)) from error
    ssl_context = tls_context(tls_cert, tls_key, tls_client_ca) if tls_cert else None
    try:
        engine = open_engine(config, data_dir, durability=durability)
    except config_module.ConfigError as error:      # the rule set or a [[merchants]] entry
        raise click.ClickException(str(error)) from error
    if input_log_path:
        _start_input_log(engine, input_log_path, config_path)
    loop = new_event_loop(use_uvloop=loop_kind == "uvloop")
    exporter = None
    try:
        server = Server(engine, config, ssl_context=ssl_context)
        if metrics_port:
            exporter = _start_metrics(server, engine, metrics_host, metrics_port, on_metrics, metrics_optional)
        loop.run_until_complete(serve_forever(server, host, port, on_ready or _announce))
    finally:
        if exporter is not None:
            exporter.stop()
        loop.close()
        if engine.input_log is not None:
            engine.input_log.close()
        engine.close()


def _start_input_log(engine, input_log_path: str, config_path: str) -> None:
    from switch import inputlog

    try:
        inputlog.attach(engine, input_log_path, config_path)
    except (inputlog.InputLogError, OSError) as error:
        engine.close()
        raise click.ClickException(str(error)) from error


def _start_metrics(server, engine, host: str, port: int, on_metrics, optional: bool):
    from switch.metrics import MetricsExporter

    exporter = MetricsExporter(server.ops, engine.stats_snapshot)
    try:
        address = exporter.start(host, port)
    except OSError as error:
        if not optional:
            raise click.ClickException(f"metrics port {host}:{port}: {error}") from error
        logging.getLogger("switch.metrics").warning("metrics port %s:%d unavailable (%s); serving without",
                                                    host, port, error)
        return None
    (on_metrics or _announce_metrics)(address)
    return exporter


def _announce_metrics(address: tuple[str, int]) -> None:
    click.echo(f"metrics on http://{address[0]}:{address[1]}/metrics")


def _announce(address: tuple[str, int]) -> None:
    click.echo(f"switch listening on {address[0]}:{address[1]} (Ctrl-C to stop)")
