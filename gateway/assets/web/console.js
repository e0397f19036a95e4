// The operations console: a view over the gateway's /v1 JSON routes, with the API key typed in
// (kept in this tab's sessionStorage only). It holds no state the routes do not give.

const $ = (id) => document.getElementById(id);

/** How often the node's figures are read again. */
const REFRESH_MS = 2000;
const SERIES = [
  { key: "stored", label: "stored", color: "#2f6fed" },
  { key: "delivered", label: "delivered", color: "#1f9d63" },
  { key: "notifications", label: "notifications", color: "#c77700" },
  { key: "signals", label: "signals", color: "#9b51e0" },
];

let refreshing;

$("key").value = sessionStorage.getItem("gateway-console-key") ?? "";
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("gateway-console-key", $("key").value.trim());
  start();
});
if ($("key").value) start();

/** A call to a /v1 route; rejects with the gateway's error message and code. */
async function api(method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${$("key").value.trim()}` } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const answer = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${answer?.error?.code ?? response.status}: ${answer?.error?.message ?? text}`);
  return answer;
}

async function start() {
  clearInterval(refreshing);
  try {
    await refresh();
  } catch (error) {
    showError(error);
    return;
  }
  hide("intro");
  show("panels");
  refreshing = setInterval(() => refresh().catch(showError), REFRESH_MS);
}

async function refresh() {
  const [{ nodes }, stats] = await Promise.all([api("GET", "/v1/nodes"), api("GET", "/v1/stats")]);
  hide("error");
  $("nodes").replaceChildren(
    ...nodes.map((node) => row([node.node, pill(node.alive ? "alive" : "down"), node.this ? "this node" : ""])),
  );
  const total = Object.values(stats.connections).reduce((sum, n) => sum + n, 0);
  const tiles = [
    ["connections", total, "connections"],
    ...Object.entries(stats.connections).map(([transport, open]) => [transport, open, `connections-${transport}`]),
    ["store queue", `${stats.store_queue} / ${stats.store_queue_max}`, "store-queue"],
    ["ledger queue", stats.ledger_queue, "ledger-queue"],
  ];
  $("stats").replaceChildren(
    ...tiles.map(([label, value, id]) => {
      const tile = element("div", "", "stat");
      tile.dataset.stat = id;
      tile.append(element("b", String(value)), element("span", label, "muted"));
      return tile;
    }),
  );
  drawChart(stats.samples);
}

/** Lines of each rate over the samples, scaled to the highest value shown. */
function drawChart(samples) {
  const chart = $("chart");
  const width = 600;
  const height = 160;
  const highest = Math.max(1, ...samples.flatMap((s) => SERIES.map(({ key }) => s[key])));
  const x = (i) => (samples.length < 2 ? 0 : (i / (samples.length - 1)) * width);
  const y = (value) => height - 4 - (value / highest) * (height - 8);
  const lines = SERIES.map(({ key, color }) => {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", samples.map((s, i) => `${x(i).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    return line;
  });
  chart.replaceChildren(...lines);
  const last = samples.at(-1) ?? {};
  $("legend").replaceChildren(
    ...SERIES.map(({ key, label, color }) => {
      const item = element("span", `${label} ${(last[key] ?? 0).toFixed(1)}/s`);
      item.style.color = color;
      return item;
    }),
    element("span", `peak ${highest.toFixed(1)}/s`),
  );
}

$("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lookUpUser().catch(showError);
});

async function lookUpUser() {
  const user = encodeURIComponent($("user").value.trim());
  const [devices, recent, preferences] = await Promise.all([
    api("GET", `/v1/users/${user}/devices`),
    api("GET", `/v1/users/${user}/recent?limit=20`),
    api("GET", `/v1/users/${user}/preferences`),
  ]);
  hide("error");
  show("user-panel");
  $("devices").replaceChildren(
    ...devices.devices.map((device) => {
      const kick = button("Kick", "plain", () => logOut(device.device, false));
      const revoke = button("Revoke", "danger", () => logOut(device.device, true));
      const actions = element("span", "", "row");
      actions.append(kick, revoke);
      const tr = row([device.device, device.platform, device.transport, time(device.connected_at), actions]);
      tr.dataset.device = device.device;
      return tr;
    }),
  );
  if ($("devices").children.length === 0) $("devices").append(row(["no device online", "", "", "", ""]));
  $("recent").replaceChildren(
    ...recent.entries.map((entry) =>
      row([
        `#${entry.seq}`,
        time(entry.ts),
        entry.kind,
        entry.from_device ? `${entry.from} · ${entry.from_device}` : entry.from ?? "",
        `${entry.bytes} B`,
        entry.body === undefined ? element("span", "hidden (web.show_bodies)", "muted") : element("code", JSON.stringify(entry.body)),
      ]),
    ),
  );
  const hours = preferences.quiet_hours;
  $("preferences").replaceChildren(
    row(["quiet hours", hours ? `${hours.windows.map((w) => `${w.start}–${w.end}`).join(", ")} (${hours.time_zone})` : "none"]),
    row(["consent", Object.entries(preferences.consent).map(([channel, yes]) => `${channel}: ${yes ? "yes" : "no"}`).join(", ")]),
    row(["bindings", element("code", JSON.stringify(preferences.bindings))]),
  );
}

async function logOut(device, revoke) {
  const user = encodeURIComponent($("user").value.trim());
  const query = new URLSearchParams({ reason: revoke ? "signed out by an operator" : "disconnected by an operator" });
  if (revoke) query.set("revoke", "true");
  try {
    await api("DELETE", `/v1/users/${user}/devices/${encodeURIComponent(device)}?${query}`);
    await lookUpUser();
  } catch (error) {
    showError(error);
  }
}

$("notify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const routed = await api("POST", "/v1/notifications", {
      user: $("notify-user").value.trim(),
      kind: $("notify-kind").value,
      title: $("notify-title").value,
      body: $("notify-body").value,
    });
    $("notification").value = routed.id;
    await lookUpNotification();
  } catch (error) {
    showError(error);
  }
});

$("notification-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lookUpNotification().catch(showError);
});

async function lookUpNotification() {
  const id = $("notification").value.trim();
  const record = await api("GET", `/v1/notifications/${encodeURIComponent(id)}`);
  hide("error");
  show("notification-panel");
  const n = record.notification;
  $("notification-summary").textContent = `${n.kind} for ${n.user}: “${n.title}” · ${time(n.created_at)}`;
  $("routes").replaceChildren(
    ...Object.entries(record.routes).map(([route, state]) => {
      const attempts = element("span", "");
      attempts.append(
        ...(state.attempts ?? []).map((a) => element("div", `${time(a.at)} · code ${a.code} · ${a.latency_ms} ms`, "attempt mono")),
      );
      if (state.detail) attempts.append(element("div", state.detail, "muted"));
      const tr = row([route, pill(state.status), attempts]);
      tr.dataset.route = route;
      return tr;
    }),
  );
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = String(cell);
    tr.append(td);
  }
  return tr;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function pill(status) {
  return element("span", status, `pill ${status}`);
}

function button(label, className, onClick) {
  const node = element("button", label, className);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function showError(error) {
  $("error").textContent = error.message;
  show("error");
}

function show(id) {
  $(id).classList.remove("hidden");
}

function hide(id) {
  $(id).classList.add("hidden");
}
