// The crosswire relay's events as a Socket.IO 4.8 app, for scripts/bench-peers.sh.
//
//   PORT=9000 [REDIS_URL=redis://127.0.0.1:6379] node server.js
//
// Serves Socket.IO (v5 protocol, Engine.IO 4) over WebSocket only on 127.0.0.1, with
// @socket.io/redis-adapter when REDIS_URL is set. Events of namespace "/", as the relay
// (crates/crosswire-cli/src/relay.rs) defines them:
//
//   join / leave {room}   joins or leaves the room, acks {ok: true}
//   room {room, data}     event "msg" with data to every member of the room on every node
//                         (the sender too, when it is a member), acks {ok: true} when asked
//   echo <any>            acks the same payload
//
// A payload of the wrong shape is acked {ok: false, error} and sends nothing. Any other HTTP
// request is answered 404 (the bench asks every server for /healthz, which crosswire has).
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error("PORT is not set");
  process.exit(2);
}
const redisUrl = process.env.REDIS_URL || "";

function answer(valid) {
  return valid ? { ok: true } : { ok: false, error: "invalid payload" };
}

function isRoomName(p) {
  return p !== null && typeof p === "object" && typeof p.room === "string";
}

async function main() {
  const httpServer = http.createServer((req, res) => {
    res.writeHead(404, { "content-length": "0" });
    res.end();
  });
  const io = new Server(httpServer, { transports: ["websocket"], serveClient: false });
  if (redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    pub.on("error", (e) => console.error("redis:", e.message));
    sub.on("error", (e) => console.error("redis:", e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on("connection", (socket) => {
    socket.on("join", (p, ack) => {
      const valid = isRoomName(p);
      if (valid) socket.join(p.room);
      if (typeof ack === "function") ack(answer(valid));
    });
    socket.on("leave", (p, ack) => {
      const valid = isRoomName(p);
      if (valid) socket.leave(p.room);
      if (typeof ack === "function") ack(answer(valid));
    });
    socket.on("room", (p, ack) => {
      const valid = isRoomName(p) && "data" in p;
      if (valid) io.to(p.room).emit("msg", p.data);
      if (typeof ack === "function") ack(answer(valid));
    });
    socket.on("echo", (p, ack) => {
      if (typeof ack === "function") ack(p);
    });
  });
  httpServer.listen(port, "127.0.0.1", () => {
    console.error(`socket.io ${require("socket.io/package.json").version} peer listening on 127.0.0.1:${port}`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
