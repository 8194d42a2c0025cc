// The arena's spectator page: joins room "arena" with netcode.js, draws the live snapshots on
// a canvas, shows the scoreboard and the chat, and sends chat lines.
//
// The token: the URL's fragment (/watch#token=...; a fragment never reaches the server's
// logs), else GET /watch/token, which a server started with --dev answers for pages opened
// from its own machine.

import { Replica, Room } from "/netcode.js";

const ARENA_M = 200;
const canvas = document.getElementById("arena");
const ctx = canvas.getContext("2d");
const statusLine = document.getElementById("status");
const chatBox = document.getElementById("chat");
const scores = document.querySelector("#scores tbody");
const form = document.getElementById("say");
const input = document.getElementById("line");

const COLOURS = {
  ground: "#34684e", gridMinor: "#3c7458", gridMajor: "#4a8666", border: "#e6dcaa",
  npc: "#d6be96", storm: "rgba(150, 70, 230, 0.28)", stormEdge: "rgba(180, 110, 255, 0.9)",
  coin: "#ffcc28", gem: "#50e6ff", heart: "#f03c50", night: "10, 14, 48", fog: "196, 204, 214",
};

const room = new Room();
const position = new Replica(room, { topic: "position" });
const environment = new Replica(room, { topic: "environment" });
const pickups = new Map(); // pickup id -> {kind, x, y}
const chat = []; // {name, text, server}
window.watch = { room, position, environment, pickups, chat, frames: 0 };

// the arena fills the window's height (the side panel takes about 300 px of its width)
function fitCanvas() {
  const size = Math.max(320, Math.min(innerHeight - 32, innerWidth - 310));
  if (canvas.width !== size) canvas.width = canvas.height = size;
}
fitCanvas();
addEventListener("resize", fitCanvas);

function setStatus(text, bad = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("bad", bad);
}

function addChat(name, text, server) {
  chat.push({ name, text, server });
  const line = document.createElement("p");
  if (server) {
    line.className = "server";
    line.textContent = text;
  } else {
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = `${name}: `;
    line.append(who, document.createTextNode(text));
  }
  chatBox.append(line);
  while (chatBox.childElementCount > 200) chatBox.firstElementChild.remove();
  chatBox.scrollTop = chatBox.scrollHeight;
}

room.onEvent("Spawn", (event) => {
  const { entity_id: id, kind, x, y } = event.fields;
  pickups.set(id, { kind, x, y });
});
room.onEvent("Despawn", (event) => pickups.delete(event.fields.entity_id));
room.onEvent("ChatLine", (event) => {
  const { player_id: playerId, name, text } = event.fields;
  addChat(name, text, playerId === 0 && name === "*");
});
room.on("disconnected", (reason) => {
  setStatus(`disconnected (${reason})`, true);
  input.disabled = form.querySelector("button").disabled = true;
});
room.on("reconnecting", () => setStatus("reconnecting..."));

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || room.state !== "connected") return;
  room.sendEvent("Chat", { text }, { topic: "say" });
  input.value = "";
});

async function token() {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) return fragment;
  const response = await fetch("/watch/token", { cache: "no-store" });
  const reply = await response.json().catch(() => ({}));
  if (!response.ok || !reply.token) {
    throw new Error(reply.message || "no token: open /watch#token=<a spectator token>");
  }
  return reply.token;
}

async function start() {
  try {
    await room.connect(location.origin, await token(), {
      topics: ["position", "environment", "game", "chat"],
    });
  } catch (error) {
    setStatus(`could not join: ${error.message}`, true);
    return;
  }
  input.disabled = form.querySelector("button").disabled = false;
  setStatus(`watching as ${room.localParticipant.identity}`);
  requestAnimationFrame(draw);
  setInterval(updatePanel, 250);
}

function rgb([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}

function draw() {
  const scale = canvas.width / ARENA_M;
  const px = (m) => m * scale;
  ctx.fillStyle = "#12161e";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = COLOURS.ground;
  ctx.fillRect(0, 0, px(ARENA_M), px(ARENA_M));
  for (let m = 5; m < ARENA_M; m += 5) {
    ctx.strokeStyle = m % 25 === 0 ? COLOURS.gridMajor : COLOURS.gridMinor;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(px(m), 0); ctx.lineTo(px(m), px(ARENA_M));
    ctx.moveTo(0, px(m)); ctx.lineTo(px(ARENA_M), px(m));
    ctx.stroke();
  }
  ctx.strokeStyle = COLOURS.border;
  ctx.lineWidth = 2;
  ctx.strokeRect(1, 1, px(ARENA_M) - 2, px(ARENA_M) - 2);

  const env = [...environment.entities().values()][0];
  if (env) {
    ctx.fillStyle = COLOURS.storm;
    ctx.strokeStyle = COLOURS.stormEdge;
    ctx.beginPath();
    ctx.arc(px(env.hazard_x), px(env.hazard_y), px(env.hazard_radius), 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  }
  for (const pickup of pickups.values()) {
    ctx.fillStyle = COLOURS[pickup.kind] || "#fff";
    ctx.beginPath();
    ctx.arc(px(pickup.x), px(pickup.y), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  const entities = position.interpolated();
  for (const e of entities.values()) {
    if (e.type !== "NpcEntity") continue;
    ctx.fillStyle = COLOURS.npc;
    ctx.beginPath();
    ctx.arc(px(e.x), px(e.y), 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.font = "12px system-ui, sans-serif";
  ctx.textAlign = "center";
  for (const e of entities.values()) {
    if (e.type !== "PlayerEntity") continue;
    const x = px(e.x);
    const y = px(e.y);
    ctx.fillStyle = rgb(e.colour);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.arc(x, y, 6, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 10 * Math.cos(e.heading), y + 10 * Math.sin(e.heading));
    ctx.stroke();
    ctx.fillStyle = "#f0f2f5";
    ctx.fillText(e.name, x, y - 12);
    ctx.fillStyle = "#ff5a5a";
    ctx.fillRect(x - 8, y + 9, 16, 2);
    ctx.fillStyle = "#6ee678";
    ctx.fillRect(x - 8, y + 9, (16 * e.health) / 100, 2);
  }
  if (env) {
    const night = env.light < 0.62 ? ((0.62 - env.light) / 0.62) * 0.78 : 0;
    if (night > 0) {
      ctx.fillStyle = `rgba(${COLOURS.night}, ${night})`;
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    if (env.weather === "FOG") {
      ctx.fillStyle = `rgba(${COLOURS.fog}, 0.25)`;
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
  }
  window.watch.frames += 1;
  if (room.state !== "disconnected") requestAnimationFrame(draw);
}

function updatePanel() {
  const players = [...position.entities().values()]
    .filter((e) => e.type === "PlayerEntity")
    .sort((a, b) => b.score - a.score || a.name.localeCompare(b.name));
  const rows = players.map((p) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = rgb(p.colour);
    name.append(swatch, document.createTextNode(p.name));
    const score = document.createElement("td");
    score.className = "score";
    score.textContent = String(p.score);
    row.append(name, score);
    return row;
  });
  scores.replaceChildren(...rows);
  const env = [...environment.entities().values()][0];
  const stats = room.stats();
  const ping = stats.pingMs === null ? "?" : stats.pingMs.toFixed(0);
  const weather = env ? ` · ${env.weather.toLowerCase()}` : "";
  setStatus(`watching as ${room.localParticipant.identity} · ${players.length} players${weather} · ping ${ping} ms`);
}

start();
