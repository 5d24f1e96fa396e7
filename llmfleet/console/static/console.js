// The console page: polls /console/api/* every interval and draws the charts, the replica table and spend.
import { LiveChart } from "./charts.js";
import { SeriesStore } from "./series.js";
import { renderReplicas, renderSpend, spendColumns } from "./tables.js";

const API = "/console/api";
const SPEND_EVERY_MS = 10000;
const state = { store: new SeriesStore(), charts: {}, spendChart: null, polls: 0, errors: [], kind: null };
// what the browser tests read: chart ids -> drawn points, and whether the first poll completed
window.llmfleetConsole = {
  state,
  points: () => Object.fromEntries(Object.entries(state.charts).map(([id, c]) => [id, c.points()])),
  spendPoints: () => (state.spendChart ? state.spendChart.points() : 0),
};

async function getJSON(path, init) {
  const answer = await fetch(API + path, { cache: "no-store", ...init });
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error ? body.error.message : `HTTP ${answer.status}`);
  return body;
}

function setupCharts(answer) {
  state.kind = answer.kind;
  const specs = Object.fromEntries(answer.charts.map((c) => [c.id, c]));
  for (const grid of document.querySelectorAll("[data-charts]")) {
    for (const id of grid.dataset.charts.split(" ")) {
      if (!specs[id]) continue;
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.chart = id;
      card.innerHTML = "<h3></h3><div class=\"plot\"></div>";
      card.querySelector("h3").textContent = title(specs[id], answer);
      const unit = document.createElement("span");
      unit.className = "unit";
      unit.textContent = specs[id].unit;
      card.querySelector("h3").appendChild(unit);
      grid.appendChild(card);
      state.charts[id] = new LiveChart(card.querySelector(".plot"), specs[id]);
    }
  }
  for (const section of document.querySelectorAll("[data-scope=gateway]")) section.hidden = answer.kind !== "gateway";
  const pills = [["serving", answer.kind === "gateway" ? "a fleet" : "one replica"]];
  if (answer.policy) pills.push(["policy", answer.policy]);
  pills.push(["TTFT SLO", `${answer.slo.ttft_ms} ms`], ["TPOT SLO", `${answer.slo.tpot_ms} ms`],
             ["sample", `${answer.interval_s} s`], ["rates over", `${answer.rate_window_s} s`],
             ["window", `${Math.round(answer.window_s / 60)} min`]);
  const context = document.getElementById("context");
  for (const [name, value] of pills) {
    const pill = document.createElement("span");
    pill.className = "pill";
    pill.append(`${name} `);
    const b = document.createElement("b");
    b.textContent = value;
    pill.appendChild(b);
    context.appendChild(pill);
  }
}

function title(spec, answer) {
  if (spec.id === "routing" && answer.policy) return `${spec.title} (${answer.policy})`;
  return spec.title;
}

async function pollSeries() {
  const since = state.store.last == null ? "" : `?since=${state.store.last}`;
  const answer = await getJSON(`/timeseries${since}`);
  if (!state.polls) setupCharts(answer);
  state.store.append(answer);
  for (const [id, chart] of Object.entries(state.charts)) chart.update(state.store.t, state.store.charts[id] || {});
  state.polls += 1;
  return answer.interval_s;
}

async function pollReplicas() {
  renderReplicas(document.querySelector("#replicas tbody"), await getJSON("/replicas"), act);
}

async function act(action, url, button) {
  button.disabled = true;
  try {
    await getJSON(`/replicas/${action}`, { method: "POST", headers: { "content-type": "application/json" },
                                            body: JSON.stringify({ url }) });
    await pollReplicas();
  } catch (err) {
    report(err);
    button.disabled = false;
  }
}

async function pollSpend() {
  const answer = await getJSON("/spend");
  document.getElementById("spend-off").hidden = answer.enabled;
  document.getElementById("spend-on").hidden = !answer.enabled;
  if (!answer.enabled) {
    document.getElementById("spend-off").textContent = answer.reason;
    return;
  }
  document.getElementById("spend-window").textContent = `last ${Math.round(answer.window_s / 60)} min`;
  renderSpend(answer);
  if (!state.spendChart) {
    state.spendChart = new LiveChart(document.getElementById("chart-spend"), { id: "spend", unit: "$" },
                                     { stepped: true });
  }
  const [times, columns] = spendColumns(answer.per_minute);
  state.spendChart.update(times, columns);
}

function report(err) {
  state.errors.push(String(err));
  const banner = document.getElementById("banner");
  banner.hidden = false;
  banner.textContent = `The console could not reach the server: ${err.message || err}`;
  document.getElementById("dot").className = "dot bad";
}

function healthy() {
  document.getElementById("banner").hidden = true;
  document.getElementById("dot").className = "dot ok";
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function loop() {
  let interval = 2;
  let lastSpend = 0;
  for (;;) {
    try {
      interval = await pollSeries();
      await pollReplicas();
      if (Date.now() - lastSpend >= SPEND_EVERY_MS) {
        lastSpend = Date.now();
        await pollSpend();
      }
      healthy();
    } catch (err) {
      report(err);
    }
    await new Promise((resolve) => setTimeout(resolve, interval * 1000));
  }
}

loop();
