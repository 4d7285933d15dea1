"""Drives `m2m mcp` with the official MCP Python SDK (the `mcp` package, pinned in
requirements.txt), as an LLM client would: it spawns the server over stdio and calls its
tools.

Two modes, each printing one JSON object per line on stdout:

  e2e    Called by crates/m2m-cli/tests/mcp.rs, which started a hub and an `m2m listen --echo`
         (and passes them in). Every step prints {"step": NAME, ...}; the Rust test asserts
         on those lines. The script itself asserts nothing, so a failure shows up as a Rust
         assertion with the line that was wrong.
  bench  Starts its own hub and echo listener, then times CALLS `whoami` and CALLS `send`
         tool calls, one after another, and prints p50/p90/p99 of each (docs/PERFORMANCE.md).

Usage:
  client.py e2e   --m2m BIN --hub WS_URL --listener ID --config DIR
  client.py bench --m2m BIN [--calls 1000]
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def mcp_server_cpu():
    """CPU seconds used so far by the `m2m mcp` child of this process (Linux /proc), or None."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == os.getpid() and b"mcp" in argv[1:2]:
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return None


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def result_fields(result):
    """What a test needs of a CallToolResult."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {
        "isError": bool(result.is_error),
        "text": texts[0] if texts else None,
        "structured": result.structured_content,
    }


def server_params(m2m, hub, config):
    return StdioServerParameters(
        command=m2m,
        args=["mcp", "--capabilities", "mcp-test"],
        env={"M2M_HUB": hub, "XDG_CONFIG_HOME": config, "RUST_LOG": "warn"},
    )


async def m2m_cli(m2m, hub, *args):
    """Runs a one-shot `m2m` command with its own fresh config dir; returns (status, stdout)."""
    config = tempfile.mkdtemp(prefix="m2m-mcp-client-")
    proc = await asyncio.create_subprocess_exec(
        m2m,
        *args,
        env={**os.environ, "M2M_HUB": hub, "XDG_CONFIG_HOME": config},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def e2e(args):
    notices = []
    superseded = asyncio.Event()

    announced = {}  # message type -> set when its arrival notice came

    def arrival(message_type):
        return announced.setdefault(message_type, asyncio.Event())

    async def on_log(params):
        notices.append({"level": params.level, "logger": params.logger, "data": params.data})
        if isinstance(params.data, dict) and params.data.get("event") == "superseded":
            superseded.set()
        if isinstance(params.data, dict) and params.data.get("event") == "message":
            arrival(params.data.get("type")).set()

    async with stdio_client(server_params(args.m2m, args.hub, args.config)) as (read, write):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            emit(
                "initialize",
                protocolVersion=init.protocol_version,
                serverName=init.server_info.name,
                capabilities=init.capabilities.model_dump(by_alias=True, exclude_none=True),
                instructions=init.instructions,
            )

            listed = await session.list_tools()
            problems = []
            for tool in listed.tools:
                try:
                    jsonschema.validators.validator_for(tool.input_schema).check_schema(tool.input_schema)
                except jsonschema.SchemaError as e:
                    problems.append(f"{tool.name}: {e.message}")
            emit(
                "list_tools",
                names=[t.name for t in listed.tools],
                schemas={t.name: t.input_schema for t in listed.tools},
                descriptions={t.name: t.description for t in listed.tools},
                schemaProblems=problems,
            )

            async def call(name, arguments=None, step=None):
                result = await session.call_tool(name, arguments or {})
                emit(step or name, **result_fields(result))
                return result

            me = (await call("whoami")).structured_content["id"]
            await call("discover", {"capabilities": ["echo"]})
            await call("find", {"capability": "echo"})
            await call("lookup", {"id": args.listener})
            await call("send", {"id": args.listener, "type": "chat", "payload": {"text": "hello"}})
            await call("request", {"id": args.listener, "type": "compute", "payload": {"n": 7}, "timeout": 30})
            await call("broadcast", {"type": "hello", "payload": "everyone", "capabilities": ["echo"]})

            # A message sent by `m2m send` comes out of wait_for_message.
            sending = asyncio.create_task(m2m_cli(args.m2m, args.hub, "send", me, "note", '{"hi": 1}'))
            await call("wait_for_message", {"type": "note", "timeout": 60})
            status, out, err = await sending
            emit("m2m_send", status=status, stdout=out, stderr=err)

            # A request made by `m2m request` is answered with respond.
            asking = asyncio.create_task(
                m2m_cli(args.m2m, args.hub, "request", me, "question", '{"q": "six times seven"}', "--timeout", "60s")
            )
            got = await call("wait_for_message", {"type": "question", "timeout": 60}, step="wait_for_request")
            message_id = (got.structured_content or {}).get("message", {}).get("messageId")
            await call("respond", {"messageId": message_id, "payload": {"answer": 42}})
            status, out, err = await asking
            emit("m2m_request", status=status, stdout=out, stderr=err)
            await call("respond", {"messageId": message_id, "payload": {"again": True}}, step="respond_twice")

            # Two more messages wait in the inbox (their arrival notices say they came). The
            # echo listener's answers to `send` and `broadcast` do not: the SDK drops
            # responses that no request waits for.
            for kind in ("alpha", "beta"):
                status, out, err = await m2m_cli(args.m2m, args.hub, "send", me, kind, f'"{kind}"')
                emit(f"m2m_send_{kind}", status=status, stdout=out, stderr=err)
            for kind in ("alpha", "beta"):
                await asyncio.wait_for(arrival(kind).wait(), 60)
            resource = await session.read_resource("m2m://inbox")
            emit("read_resource", text=resource.contents[0].text)
            await call("inbox", {"limit": 100})
            await call("wait_for_message", {"timeout": 0}, step="wait_empty")
            await call("update_status", {"status": "idle", "metadata": {"role": "test"}})
            await call("update_status", {"status": "busy"}, step="update_status_keeps_metadata")
            await call("lookup", {"id": me}, step="lookup_self")

            # Bad arguments: each is a tool error, never a crash or a protocol error.
            await call("request", {"id": args.listener, "type": "x", "timeout": 500}, step="bad_timeout")
            await call("send", {"type": "chat"}, step="bad_no_target")
            await call("find", {}, step="bad_missing")
            await call("find", {"capability": "echo", "bogus": 1}, step="bad_unknown_field")
            await call("send", {"id": args.listener, "type": "chat", "payload": '{"a": nope}'}, step="bad_payload")
            await call("discover", {"limit": "ten"}, step="bad_type")
            await call("lookup", {"id": "0" * 32}, step="unknown_agent")
            try:
                await session.call_tool("no_such_tool", {})
                emit("unknown_tool", raised=False)
            except Exception as e:  # noqa: BLE001 - any protocol error is what we look for
                emit("unknown_tool", raised=True, error=str(e))
            # Still serving after all that.
            await call("whoami", step="still_alive")

            emit("notifications", messages=notices)

            # Another process registers with this server's identity: the hub drops the
            # server for it, and the tools say so (the server announces it as an error log).
            key = os.path.join(args.config, "m2m", "mcp-identity.key")
            taker = await asyncio.create_subprocess_exec(
                args.m2m,
                "listen",
                "--identity",
                key,
                env={**os.environ, "M2M_HUB": args.hub, "XDG_CONFIG_HOME": tempfile.mkdtemp()},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                line = await asyncio.wait_for(taker.stdout.readline(), 60)
                emit("takeover_listen", line=json.loads(line))
                await asyncio.wait_for(superseded.wait(), 60)
                await call("send", {"id": args.listener, "type": "chat"}, step="after_takeover")
                await call("whoami", step="whoami_after_takeover")
            finally:
                taker.terminate()
                await taker.wait()
    emit("done")


async def bench(args):
    work = tempfile.mkdtemp(prefix="m2m-mcp-bench-")
    env = {**os.environ, "XDG_CONFIG_HOME": os.path.join(work, "hub"), "RUST_LOG": "warn"}
    hub = subprocess.Popen(
        [args.m2m, "hub", "--port", "0", "--bind", "127.0.0.1", "--database", "sqlite::memory:"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    listener = None
    try:
        ws = json.loads(hub.stdout.readline())["ws"]
        threading.Thread(target=hub.stdout.read, daemon=True).start()
        listener = subprocess.Popen(
            [args.m2m, "listen", "--echo"],
            stdout=subprocess.PIPE,
            env={**env, "M2M_HUB": ws, "XDG_CONFIG_HOME": os.path.join(work, "listener")},
            text=True,
        )
        target = json.loads(listener.stdout.readline())["id"]
        # The listener prints a line per message: keep reading, or its full pipe stalls it.
        threading.Thread(target=listener.stdout.read, daemon=True).start()
        params = server_params(args.m2m, ws, os.path.join(work, "mcp"))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                # `whoami` answers from memory: the MCP and client share of a call. `send`
                # adds the encrypted P2P message and its ack.
                for name, arguments in (
                    ("whoami", {}),
                    ("send", {"id": target, "type": "bench", "payload": {"n": 0}}),
                ):
                    for _ in range(min(50, args.calls)):  # warm-up: connection, caches
                        await session.call_tool(name, arguments)
                    times = []
                    cpu = time.process_time()
                    server_cpu = mcp_server_cpu()
                    for _ in range(args.calls):
                        start = time.perf_counter_ns()
                        result = await session.call_tool(name, arguments)
                        times.append(time.perf_counter_ns() - start)
                        if result.is_error:
                            raise SystemExit(f"{name} failed: {result.content[0].text}")
                    times.sort()
                    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1e6  # noqa: E731
                    emit(
                        "bench",
                        tool=name,
                        calls=len(times),
                        p50_ms=round(pick(0.50), 3),
                        p90_ms=round(pick(0.90), 3),
                        p99_ms=round(pick(0.99), 3),
                        max_ms=round(times[-1] / 1e6, 3),
                        # CPU the client itself spent per call (Python, the SDK, pydantic).
                        client_cpu_ms=round((time.process_time() - cpu) * 1e3 / len(times), 3),
                        # CPU `m2m mcp` spent per call (all its threads).
                        server_cpu_ms=(
                            None
                            if server_cpu is None
                            else round((mcp_server_cpu() - server_cpu) * 1e3 / len(times), 3)
                        ),
                    )
    finally:
        for p in (listener, hub):
            if p is not None:
                p.terminate()
                p.wait()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("e2e")
    e.add_argument("--m2m", required=True)
    e.add_argument("--hub", required=True)
    e.add_argument("--listener", required=True)
    e.add_argument("--config", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--m2m", required=True)
    b.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(e2e(args) if args.mode == "e2e" else bench(args))


if __name__ == "__main__":
    sys.exit(main())
