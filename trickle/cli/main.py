"""The ``trickle`` command: the click group and ``main()``, the console-script entry point."""

from __future__ import annotations

import click

from trickle._version import __version__
from trickle.cli.client import executions, jobs, version
from trickle.cli.serve import serve

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(
    __version__, "-V", "--version", prog_name="trickle", message="%(prog)s %(version)s"
)
def cli() -> None:
    """trickle: a distributed, fault-tolerant cron, compatible with Dkron's API.

    Start a server with 'trickle serve --server', then manage jobs with 'trickle jobs ...'
    (the client commands talk to --address, default http://127.0.0.1:8080).
    """


cli.add_command(serve)
cli.add_command(jobs)
cli.add_command(executions)
cli.add_command(version)


def main() -> None:
    """Run the CLI (exits the process with the command's exit code)."""
    cli(prog_name="trickle")


if __name__ == "__main__":
    main()
