// The demo chat: one device of one user on the JSON WebSocket, through the gateway's own
// JavaScript client. Everything it shows comes from the client's events; it keeps no state of
// its own beyond what is on screen.
import { GatewayClient } from "/client/gateway-client.js";

const $ = (id) => document.getElementById(id);

/** How long a "typing" signal is shown, and how often one is sent while typing. */
const TYPING_SHOWN_MS = 3000;
const TYPING_EVERY_MS = 2000;

let client;
let me;
/** Own messages shown when sent, not yet seen in the log (a sync brings them back). */
const unconfirmed = [];

$("device").value = `web-${Math.random().toString(36).slice(2, 6)}`;

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  hide("sign-in-error");
  me = { user: $("user").value.trim(), device: $("device").value.trim() };
  const pasted = $("token").value.trim();
  try {
    // A pasted token is used as it is; otherwise dev mode mints one (and again when it expires).
    client = new GatewayClient({ url: webSocketUrl(), token: pasted || (await devTokens()) });
  } catch (error) {
    show("sign-in-error", error.message);
    return;
  }
  listen(client);
  client.connect();
  $("who").textContent = `${me.user} · ${me.device}`;
  $("to").value = me.user;
  hide("sign-in");
  show("chat");
  show("offline");
});

/** A token callback that mints in dev mode: the first token now (so a refusal shows here). */
async function devTokens() {
  let first = await devToken();
  return async () => {
    const token = first ?? (await devToken());
    first = undefined;
    return token;
  };
}

async function devToken() {
  const response = await fetch("/dev/tokens", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: me.user, device: me.device, platform: "web" }),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${answer.error.message} — paste a device token instead`);
  return answer.token;
}

function webSocketUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}

function listen(client) {
  client.on("state", (change) => {
    $("state").textContent = change.state;
    $("state").className = `pill ${change.state}`;
    $("composer").querySelector("button").disabled = change.state === "disconnected" && !change.willReconnect;
    if (change.state === "disconnected" && change.reason.kind !== "closed" && change.reason.kind !== "network") {
      show("notice", `Disconnected (${change.reason.kind}): ${change.reason.message}`, "bad");
    }
  });
  client.on("message", (message) => showMessage(message));
  client.on("notification", ({ entry, notification }) => showNotification(entry, notification));
  client.on("presence", (event) => showPresence(event));
  client.on("signal", (signal) => showTyping(signal));
  client.on("approval", (status) => {
    if (status === "pending") show("notice", "This device waits for one of your other devices to approve it.");
    if (status === "approved") show("notice", "This device was approved.");
    if (status === "denied") show("notice", "This device was denied.", "bad");
  });
  client.on("reset", (reset) => {
    show("notice", `History before #${reset.availableFrom} is gone (${reset.reason}); the list starts again.`);
    $("messages").replaceChildren();
  });
}

$("offline").addEventListener("click", async () => {
  const button = $("offline");
  button.disabled = true;
  if (button.dataset.offline) {
    delete button.dataset.offline;
    button.textContent = "Go offline";
    client.connect();
  } else {
    button.dataset.offline = "yes";
    button.textContent = "Back online";
    await client.close();
  }
  button.disabled = false;
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  hide("send-error");
  const to = $("to").value.trim();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  const item = bubble({ from: me.user, from_device: me.device, to, body: { text } }, "sending…");
  unconfirmed.push({ item, text });
  try {
    await client.send(to, { text });
    item.querySelector(".meta").textContent = meta({ from: me.user, from_device: me.device, to }, "sent");
  } catch (error) {
    show("send-error", `Not sent: ${error.message}`, "bad");
    item.remove();
  }
});

let lastTyping = 0;
$("text").addEventListener("input", () => {
  const now = Date.now();
  if (now - lastTyping < TYPING_EVERY_MS || client?.state !== "live") return;
  lastTyping = now;
  client.signal($("to").value.trim(), { typing: true }).catch(() => {});
});

function showMessage(message) {
  if (message.from === me.user && message.from_device === me.device) {
    // One of this device's own sends, back from the log: it is on screen already.
    const index = unconfirmed.findIndex((own) => own.text === message.body?.text);
    if (index >= 0) {
      const [own] = unconfirmed.splice(index, 1);
      own.item.dataset.seq = message.seq;
      return;
    }
  }
  bubble(message, `#${message.seq}`);
  if (message.from_device) markOnline(message.from_device);
}

function bubble(message, status) {
  const item = document.createElement("li");
  const mine = message.from === me.user && message.from_device === me.device;
  item.className = mine ? "mine" : "";
  if (message.seq) item.dataset.seq = message.seq;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = typeof message.body?.text === "string" ? message.body.text : JSON.stringify(message.body);
  const info = document.createElement("span");
  info.className = "meta";
  info.textContent = meta(message, status);
  item.append(text, info);
  $("messages").append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function meta(message, status) {
  const from = message.from_device ? `${message.from} · ${message.from_device}` : message.from ?? "backend";
  const to = message.to && message.to !== me.user ? ` → ${message.to}` : "";
  return `${from}${to} · ${status}`;
}

function showNotification(entry, notification) {
  hide("no-notifications");
  const item = document.createElement("li");
  item.dataset.seq = entry.seq;
  const title = document.createElement("strong");
  title.textContent = notification.title;
  const body = document.createElement("div");
  body.textContent = notification.body;
  const kind = document.createElement("span");
  kind.className = "muted";
  kind.textContent = notification.kind;
  item.append(title, body, kind);
  $("notifications").prepend(item);
}

function showPresence(event) {
  switch (event.type) {
    case "online":
      markOnline(event.device.device, `${event.device.platform}, ${event.device.transport}`);
      break;
    case "offline":
      markOffline(event.device, event.reason);
      break;
    case "kicked":
      if (event.device === me.device) show("notice", `Logged out: ${event.reason}`, "bad");
      else markOffline(event.device, `kicked: ${event.reason}`);
      break;
    case "approval_request":
      $("approval-text").textContent = `${event.device} (${event.platform}) wants to sign in as ${me.user}. `;
      $("approval").dataset.device = event.device;
      show("approval");
      break;
    case "approval_resolved":
      if ($("approval").dataset.device === event.device) hide("approval");
      show("notice", `${event.device} was ${event.approved ? "approved" : "denied"} by ${event.by ?? "the backend"}.`);
      break;
  }
}

for (const [id, approve] of [["approve", true], ["deny", false]]) {
  $(id).addEventListener("click", async () => {
    try {
      await client.approveDevice($("approval").dataset.device, approve);
      hide("approval");
    } catch (error) {
      show("notice", `Could not decide: ${error.message}`, "bad");
    }
  });
}

function deviceChip(device) {
  if (device === me.device) return undefined;
  hide("no-devices");
  let chip = [...$("devices").children].find((item) => item.dataset.device === device);
  if (!chip) {
    chip = document.createElement("li");
    chip.dataset.device = device;
    chip.textContent = device;
    $("devices").append(chip);
  }
  return chip;
}

function markOnline(device, details) {
  const chip = deviceChip(device);
  if (!chip) return;
  chip.classList.remove("offline");
  if (details) chip.title = `online: ${details}`;
}

function markOffline(device, reason) {
  const chip = deviceChip(device);
  if (!chip) return;
  chip.classList.add("offline");
  chip.title = `offline: ${reason}`;
}

let typingTimer;
function showTyping(signal) {
  if (!signal.body?.typing) return;
  const who = signal.from_device ? `${signal.from} · ${signal.from_device}` : signal.from ?? "someone";
  $("typing").textContent = `${who} is typing…`;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => ($("typing").textContent = ""), TYPING_SHOWN_MS);
}

function show(id, text, tone) {
  const element = $(id);
  if (text !== undefined) element.textContent = text;
  if (tone !== undefined || text !== undefined) element.classList.toggle("bad", tone === "bad");
  element.classList.remove("hidden");
}

function hide(id) {
  $(id).classList.add("hidden");
}
