"""A one-hop relay that sends one gRPC message per line: what batching is measured against.

`python -m bench.perline TOOL` serves `iacrunner.v1.Runner/Execute` on 127.0.0.1:<free
port> (printed as {"port": N} on stdout). Each Execute runs `TOOL <command> <args>` with the
request's env_vars, splits its stdout into lines (one 64 KiB read at a time, split in
Python, the fast way) and yields one ExecuteEvent per line, then a result. No iac-runner,
no JSON: only the per-message cost of Python gRPC is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from protos.iacrunner.v1 import runner_pb2 as pb
from protos.iacrunner.v1 import runner_pb2_grpc as pb_grpc


class PerLineRunner(pb_grpc.RunnerServicer):  # type: ignore[misc]
    def __init__(self, tool: str) -> None:
        self.tool = tool

    async def Execute(self, request: Any, context: Any) -> AsyncIterator[Any]:
        proc = await asyncio.create_subprocess_exec(
            self.tool,
            request.command,
            *request.args,
            env={**os.environ, **dict(request.env_vars)},
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        yield pb.ExecuteEvent(started=pb.Started(run_id=request.run_id))
        seq = 0
        carry = b""
        while True:
            chunk = await proc.stdout.read(64 * 1024)
            if not chunk:
                break
            data = carry + chunk
            *lines, carry = data.split(b"\n")
            for raw in lines:
                seq += 1
                line = pb.Line(seq=seq, stream="stdout", text=raw.decode())
                yield pb.ExecuteEvent(output=pb.Output(lines=[line]))
        code = await proc.wait()
        yield pb.ExecuteEvent(
            result=pb.Result(
                success=code == 0,
                exit_code=code,
                outcome=pb.OUTCOME_SUCCEEDED if code == 0 else pb.OUTCOME_FAILED,
                last_seq=seq,
            )
        )


async def serve(tool: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RunnerServicer_to_server(PerLineRunner(tool), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1]))
    except KeyboardInterrupt:
        pass
