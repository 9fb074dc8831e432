"""Embedding trickle in an existing Trio service, with a Python executor.

The "service" here is a tiny TCP greeter standing in for your program; trickle runs beside
it in the same nursery, schedules a Python callable and a shell command, and the service
reads the engine's events. Run it:

    python examples/embedded.py                 # until Ctrl-C; API on http://127.0.0.1:8081
    python examples/embedded.py --runs 3        # stop after three runs (used by the tests)
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial

import trio

from trickle import Engine, EngineConfig, EventKind, ExecutionContext, Job
from trickle.http.app import serve_http


async def greeter(stream: trio.SocketStream) -> None:
    """The existing service: says hello to whoever connects."""
    await stream.send_all(b"hello from a service that embeds trickle\n")


async def collect_metrics(ctx: ExecutionContext) -> None:
    """A Python executor: any async callable taking the execution context.

    Output written to ctx.output is recorded with the execution and streamed as events.
    Raise (or return False) to fail the run; it is then retried if the job has retries."""
    ctx.output.write(f"collected metrics for run {ctx.execution.id}\n")
    await trio.sleep(0.1)  # real work would await I/O here, never block the loop


async def main(runs: int | None, data_dir: str, http_port: int) -> None:
    config = EngineConfig(data_dir=data_dir, node_name="embedded")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_tcp, greeter, 0, host="127.0.0.1"))
        engine: Engine = await nursery.start(Engine(config).run)
        engine.register_executor("collect-metrics", collect_metrics)
        await engine.put_job(Job(name="metrics", schedule="@every 1s", executor="collect-metrics"))
        await engine.put_job(
            Job(
                name="disk-usage",
                schedule="@every 2s",
                executor="shell",
                executor_config={"command": "df -h /"},
            )
        )
        if http_port >= 0:
            urls = await nursery.start(
                partial(serve_http, engine, host="127.0.0.1", port=http_port)
            )
            print(f"trickle API on {urls[0]}", flush=True)
        seen = 0
        async with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as events:
            async for event in events:
                ex = event.execution
                assert ex is not None
                print(
                    f"{ex.job_name}: {ex.status} {ex.output.strip().splitlines()[0]!r}", flush=True
                )
                seen += 1
                if runs is not None and seen >= runs:
                    break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--data-dir", default=None, help="state directory (default: temp)")
    parser.add_argument("--http-port", type=int, default=8081, help="API port; -1 for none")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            trio.run(main, args.runs, args.data_dir or tmp, args.http_port)
        except KeyboardInterrupt:
            pass
