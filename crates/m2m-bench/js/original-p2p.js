#!/usr/bin/env node
// The P2P bench on the original JavaScript SDK, to measure it beside ours on one machine.
// The SDK itself is not part of this repository: pass the path of m2mai/M2M's agent.js
// (after `npm install` there).
//
//   node original-p2p.js peer  AGENT_JS --hub WS_URL
//       The bench's second process on the original SDK, interchangeable with
//       `m2m-bench p2p-peer`: prints {"id","port","pid"} once registered, answers
//       `bench.req` with respond({data}), leaves when stdin closes.
//
//   node original-p2p.js drive AGENT_JS --hub WS_URL --peer-cmd 'CMD ARGS…'
//        [--scenarios messages,request,request-pipelined] [--duration 5] [--warmup 1]
//        [--size 200] [--in-flight 16] [--request-in-flight 64]
//       Starts the peer command (with `--hub WS_URL` appended), then runs each scenario as
//       m2m-bench p2p does, with the original SDK as the sending side: `messages` is
//       sendDirect (the original opens a connection and handshakes per message),
//       `request` is request() one at a time, `request-pipelined` K at a time. Prints one
//       JSON document: per scenario {ok, per_s, p50_us, p99_us, errors}.

'use strict';
const { spawn } = require('child_process');
const net = require('net');
const path = require('path');
const readline = require('readline');

const [mode, agentJs, ...rest] = process.argv.slice(2);
if (!['peer', 'drive'].includes(mode) || !agentJs) {
  console.error('usage: original-p2p.js peer|drive AGENT_JS --hub WS_URL …');
  process.exit(2);
}
const { M2MAgent } = require(path.resolve(agentJs));

function option(name, fallback) {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 && i + 1 < rest.length ? rest[i + 1] : fallback;
}

// The original SDK needs a fixed port: take a free one from the system.
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startAgent(hub) {
  const agent = new M2MAgent({
    port: await freePort(),
    hub,
    autoReconnect: false,
  });
  // request() adds a listener per request in flight: no warning at 64.
  agent.setMaxListeners(0);
  await agent.connect();
  return agent;
}

async function peer() {
  const agent = await startAgent(option('hub'));
  agent.on('message', (msg) => {
    if (msg.type === 'bench.req') {
      const data = msg.payload && msg.payload.data;
      agent.respond(msg, { data }).catch((e) => console.error('respond failed:', e.message));
    }
  });
  console.log(JSON.stringify({ id: agent.id, port: agent.actualPort, pid: process.pid }));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  process.on('SIGTERM', () => process.exit(0));
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 10) / 10;
}

async function closedLoops(workers, warmupS, durationS, op) {
  const start = process.hrtime.bigint();
  const warmEnd = start + BigInt(Math.round(warmupS * 1e9));
  const deadline = warmEnd + BigInt(Math.round(durationS * 1e9));
  const latencies = [];
  const errors = {};
  await Promise.all(Array.from({ length: workers }, async () => {
    for (;;) {
      const t = process.hrtime.bigint();
      if (t >= deadline) return;
      let failure = null;
      try { await op(); } catch (e) { failure = String(e && e.message).slice(0, 120); }
      if (t < warmEnd) continue;
      if (failure === null) latencies.push(Number(process.hrtime.bigint() - t) / 1e3);
      else errors[failure] = (errors[failure] || 0) + 1;
    }
  }));
  latencies.sort((a, b) => a - b);
  return {
    ok: latencies.length,
    per_s: Math.round(latencies.length / durationS * 10) / 10,
    p50_us: quantile(latencies, 0.5),
    p99_us: quantile(latencies, 0.99),
    errors,
  };
}

async function drive() {
  const hub = option('hub');
  const words = option('peer-cmd', '').split(/\s+/).filter(Boolean);
  if (words.length === 0) throw new Error('--peer-cmd is required');
  const child = spawn(words[0], [...words.slice(1), '--hub', hub], { stdio: ['pipe', 'pipe', 'inherit'] });
  const first = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the peer exited (${code}) before it was ready`)));
  });
  const hello = JSON.parse(first);
  const address = `127.0.0.1:${hello.port}`;
  const agent = await startAgent(hub);
  const size = parseInt(option('size', '200'), 10);
  const text = Array.from({ length: size }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
  const duration = parseFloat(option('duration', '5'));
  const warmup = parseFloat(option('warmup', '1'));
  const scenarios = option('scenarios', 'messages,request,request-pipelined').split(',');
  const result = {
    bench: 'p2p-original-sdk',
    sdk: path.resolve(agentJs),
    peer: option('peer-cmd'),
    node: process.version,
    options: { duration_s: duration, warmup_s: warmup, size },
  };
  for (const scenario of scenarios) {
    if (scenario === 'messages') {
      const k = parseInt(option('in-flight', '16'), 10);
      result.messages = await closedLoops(k, warmup, duration,
        () => agent.sendDirect(address, 'bench.msg', text));
      result.messages.in_flight = k;
    } else if (scenario === 'request' || scenario === 'request-pipelined') {
      const k = scenario === 'request' ? 1 : parseInt(option('request-in-flight', '64'), 10);
      result[scenario] = await closedLoops(k, warmup, duration, async () => {
        const reply = await agent.request(hello.id, 'bench.req', { data: text });
        if (!reply || reply.data === undefined) throw new Error('response without data');
      });
      result[scenario].in_flight = k;
    } else {
      throw new Error(`unknown scenario ${scenario}`);
    }
  }
  // Let the last acks reach the peer before telling it to leave.
  await new Promise((resolve) => setTimeout(resolve, 300));
  child.stdin.end();
  console.log(JSON.stringify(result, null, 2));
  await agent.disconnect().catch(() => {});
  process.exit(0);
}

(mode === 'peer' ? peer() : drive()).catch((e) => {
  console.error(`original-p2p.js: ${e && e.stack || e}`);
  process.exit(1);
});
