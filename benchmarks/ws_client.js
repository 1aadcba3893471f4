// WebSocket echo load client for benchmarks/ws_echo.py (needs the `ws` npm package:
//   npm install --no-save --no-package-lock --prefix benchmarks ws@8
// which creates benchmarks/node_modules; never commit it).
//
// Usage: node ws_client.js URL CONNECTIONS SECONDS MESSAGE_BYTES MAX_MESSAGES
// Opens CONNECTIONS sockets, keeps exactly one message in flight on each, and
// after SECONDS (or MAX_MESSAGES echoes in total) prints one JSON line:
// {"messages": N, "seconds": S, "errors": E}. Compression is not offered, so
// the servers' permessage-deflate stays off and only framing is measured.
"use strict";

const WebSocket = require("ws");

const [url, connections, seconds, size, maxMessages] = process.argv.slice(2);
const count = Number(connections);
const duration = Number(seconds) * 1000;
const limit = Number(maxMessages);
const payload = "x".repeat(Number(size));

let opened = 0;
let closed = 0;
let messages = 0;
let errors = 0;
let started = 0;
let stopping = false;
const sockets = [];

function finish() {
  if (stopping) return;
  stopping = true;
  const elapsed = (performance.now() - started) / 1000;
  process.stdout.write(JSON.stringify({ messages, seconds: elapsed, errors }) + "\n");
  for (const socket of sockets) socket.terminate();
  setTimeout(() => process.exit(0), 100);
}

function start() {
  started = performance.now();
  setTimeout(finish, duration);
  for (const socket of sockets) socket.send(payload);
}

for (let i = 0; i < count; i++) {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  sockets.push(socket);
  socket.on("open", () => {
    opened += 1;
    if (opened === count) start();
  });
  socket.on("message", () => {
    if (stopping) return;
    messages += 1;
    if (messages >= limit) finish();
    else socket.send(payload);
  });
  socket.on("error", () => {
    errors += 1;
  });
  socket.on("close", () => {
    closed += 1;
    if (!stopping && closed === count) finish();
  });
}
