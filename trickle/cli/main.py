"""The ``trickle`` command: the click group and ``main()``, the console-script entry point."""

from __future__ import annotations

import click

from trickle._version import __version__
from trickle.cli.client import executions, jobs, leave, members, raft, version
from trickle.cli.serve import serve
from trickle.cli.watch import watch

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(
    __version__, "-V", "--version", prog_name="trickle", message="%(prog)s %(version)s"
)
def cli() -> None:
    """trickle: a distributed, fault-tolerant cron, compatible with Dkron's API.

    Start a server with 'trickle serve --server', then manage jobs with 'trickle jobs ...',
    follow runs and their output live with 'trickle watch', and the cluster with 'trickle
    members', 'trickle leave' and 'trickle raft ...' (the client commands talk to
    --address, default http://127.0.0.1:8080; the web UI is at /ui/ there).
    """


@click.command("keygen")
@click.option(
    "--size",
    type=click.Choice(["16", "24", "32"]),
    default="32",
    show_default=True,
    help="Key length in bytes: 16, 24 or 32 for AES-128, AES-192 or AES-256.",
)
def keygen(size: str) -> None:
    """Print a new random gossip encryption key, base64-encoded.

    Give the same key to every node with --encrypt (or the config file key 'encrypt');
    see docs/gossip-encryption.md for rotating keys.
    """
    from trickle.gossip.keyring import encode_key, generate_key

    click.echo(encode_key(generate_key(int(size))))


cli.add_command(serve)
cli.add_command(jobs)
cli.add_command(executions)
cli.add_command(members)
cli.add_command(leave)
cli.add_command(raft)
cli.add_command(version)
cli.add_command(watch)
cli.add_command(keygen)


def main() -> None:
    """Run the CLI (exits the process with the command's exit code)."""
    cli(prog_name="trickle")


if __name__ == "__main__":
    main()
