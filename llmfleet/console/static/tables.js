// The replica table (with drain / undrain actions) and the spend tables, drawn from the console's JSON.
import { formatValue, shortName } from "./charts.js";

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function badge(td, text, tone) {
  const span = document.createElement("span");
  span.className = `badge ${tone}`;
  span.textContent = text;
  td.textContent = "";
  td.appendChild(span);
}

function health(rep) {
  if (!rep.healthy) return ["down", "bad"];
  if (rep.draining) return [rep.drained_by === "operator" ? "drained" : "draining", "warn"];
  return ["healthy", "good"];
}

export function renderReplicas(tbody, answer, onAction) {
  tbody.textContent = "";
  for (const rep of answer.replicas) {
    const row = tbody.insertRow();
    row.dataset.url = rep.url;
    cell(row, shortName(rep.url));
    cell(row, rep.model ?? "–");
    cell(row, [rep.version, rep.software && `llmfleet ${rep.software}`].filter(Boolean).join(" · ") || "–");
    badge(cell(row, ""), ...health(rep));
    const circuit = cell(row, "");
    if (rep.circuit) badge(circuit, rep.circuit.replace("_", "-"), rep.circuit === "closed" ? "good" :
                           rep.circuit === "open" ? "bad" : "warn");
    else circuit.textContent = "–";
    cell(row, rep.in_flight ?? "–", "num");
    cell(row, rep.running ?? "–", "num");
    cell(row, rep.waiting ?? "–", "num");
    cell(row, rep.kv_usage == null ? "–" : formatValue(100 * rep.kv_usage, "%"), "num");
    cell(row, rep.routed ?? "–", "num");
    const actions = cell(row, "", "num");
    if (answer.can_drain) {
      const operator = rep.drained_by === "operator";
      const button = document.createElement("button");
      button.textContent = operator ? "Undrain" : "Drain";
      button.className = operator ? "undrain" : "drain";
      button.dataset.action = operator ? "undrain" : "drain";
      button.addEventListener("click", () => onAction(button.dataset.action, rep.url, button));
      actions.appendChild(button);
    }
  }
}

function table(el, columns, rows) {
  el.textContent = "";
  const head = el.createTHead().insertRow();
  for (const [title, , numeric] of columns) {
    const th = document.createElement("th");
    th.textContent = title;
    if (numeric) th.className = "num";
    head.appendChild(th);
  }
  const body = el.createTBody();
  if (!rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = columns.length;
    td.className = "muted";
    td.textContent = "nothing in this window";
  }
  for (const item of rows) {
    const row = body.insertRow();
    for (const [, render, numeric] of columns) {
      const value = render(item);
      if (value instanceof Node) row.insertCell().appendChild(value);
      else cell(row, value, numeric ? "num" : "");
    }
  }
}

const money = (v) => formatValue(v, "$");
const optionalMoney = (v) => (v == null ? "–" : money(v));
const per1m = (r) => (r.cost_per_1m == null ? "–" : money(r.cost_per_1m));
const tokens = (r) => Number(r.tokens).toLocaleString();

export function renderSpend(answer) {
  const groups = [["by-key", "Key", (r) => r.name ?? r.key_id], ["by-team", "Team", (r) => r.team_id ?? "(none)"],
                  ["by-model", "Model", (r) => r.model ?? "–"]];
  const key = { "by-key": "by_key", "by-team": "by_team", "by-model": "by_model" };
  for (const [id, title, name] of groups) {
    table(document.getElementById(id), [[title, name], ["Requests", (r) => r.requests, true],
      ["Tokens", tokens, true], ["Spend", (r) => money(r.spend), true], ["$ / 1M tok", per1m, true]],
      answer[key[id]]);
  }
  table(document.getElementById("budgets"), [["", (b) => b.kind], ["Name", (b) => b.name],
    ["Period spend", (b) => money(b.period_spend), true], ["Budget", (b) => optionalMoney(b.max_budget), true],
    ["Soft", (b) => optionalMoney(b.soft_budget), true], ["Used", usedBar],
    ["Total spend", (b) => money(b.spend), true]], answer.budgets);
  const alerts = document.getElementById("alerts");
  alerts.textContent = "";
  for (const alert of answer.alerts) {
    const li = document.createElement("li");
    const tone = alert.kind === "budget_reached" ? "bad" : "warn";
    li.innerHTML = `<span class="badge ${tone}"></span> <b></b> `;
    li.children[0].textContent = alert.kind.replace("_", " ");
    li.children[1].textContent = alert.subject;
    li.appendChild(document.createTextNode(alert.message));
    alerts.appendChild(li);
  }
  if (!answer.alerts.length) alerts.innerHTML = '<li class="muted">no budget alert</li>';
  const total = answer.by_model.reduce((a, r) => a + r.tokens, 0);
  document.getElementById("spend-total").textContent = money(answer.total);
  document.getElementById("spend-tokens").textContent = total.toLocaleString();
  document.getElementById("spend-per-1m").textContent = total ? money((answer.total * 1e6) / total) : "–";
  document.getElementById("spend-alerts").textContent = String(answer.alerts.length);
}

function usedBar(b) {
  const span = document.createElement("span");
  if (b.used == null) { span.textContent = "no budget"; span.className = "muted"; return span; }
  const bar = document.createElement("span");
  bar.className = `bar ${b.used >= 1 ? "bad" : b.used >= 0.8 ? "warn" : ""}`;
  const fill = document.createElement("div");
  fill.style.width = `${Math.min(100, 100 * b.used)}%`;
  bar.appendChild(fill);
  span.append(bar, `${(100 * b.used).toFixed(0)}%`);
  return span;
}

export function spendColumns(perMinute) {
  // per-minute rows -> (times, {model: [$...]}) with every minute of the window present
  const minutes = [...new Set(perMinute.map((r) => r.minute))].sort((a, b) => a - b);
  const index = new Map(minutes.map((m, i) => [m, i]));
  const columns = {};
  for (const r of perMinute) {
    const model = r.model ?? "–";
    (columns[model] ||= new Array(minutes.length).fill(0))[index.get(r.minute)] = r.spend;
  }
  return [minutes.map((m) => m * 60), columns];
}
