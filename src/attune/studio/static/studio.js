// attune studio: small page scripts over the JSON / SSE endpoints (no framework, no build step).
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

async function api(method, url, body) {
  const res = await fetch(url, { method, headers: body ? { "Content-Type": "application/json" } : {},
                                 body: body ? JSON.stringify(body) : undefined });
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function show(el, text, isError) {
  el.hidden = false;
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }

// ---- a line chart on a canvas: series = [{name, points: [[x, y]], color, dashed, dots}] ----
function drawChart(canvas, series, { logY = false } = {}) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 44;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  const pts = series.flatMap(s => s.points).filter(p => Number.isFinite(p[1]) && (!logY || p[1] > 0));
  if (!pts.length) { ctx.fillStyle = "#999"; ctx.fillText("waiting for data…", W / 2 - 40, H / 2); return; }
  const fy = v => logY ? Math.log10(v) : v;
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(...pts.map(p => fy(p[1]))), y1 = Math.max(...pts.map(p => fy(p[1])));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const X = x => pad + (x - x0) / (x1 - x0) * (W - pad - 10), Y = y => H - pad + 10 - (fy(y) - y0) / (y1 - y0) * (H - pad - 10);
  ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#555"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(pad, 10); ctx.lineTo(pad, H - pad + 10); ctx.lineTo(W - 10, H - pad + 10); ctx.stroke();
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = H - pad + 10 - (H - pad - 10) * i / 4;
    ctx.fillText((logY ? 10 ** v : v).toPrecision(3), 2, y + 4);
  }
  ctx.fillText(`step ${x0}`, pad, H - 12); ctx.fillText(`${x1}`, W - 40, H - 12);
  series.forEach((s, i) => {
    const p = s.points.filter(q => Number.isFinite(q[1]) && (!logY || q[1] > 0));
    ctx.strokeStyle = ctx.fillStyle = s.color; ctx.lineWidth = 2; ctx.setLineDash(s.dashed ? [5, 4] : []);
    if (s.dots) p.forEach(q => { ctx.beginPath(); ctx.arc(X(q[0]), Y(q[1]), 3.5, 0, 7); ctx.fill(); });
    else { ctx.beginPath(); p.forEach((q, j) => j ? ctx.lineTo(X(q[0]), Y(q[1])) : ctx.moveTo(X(q[0]), Y(q[1]))); ctx.stroke(); }
    ctx.setLineDash([]); ctx.fillText(s.name, W - 150, 20 + 14 * i);
  });
}

const COLORS = ["#1d3557", "#e76f51", "#2a9d8f", "#9c6644", "#6a4c93"];

// ---- run page: live curves over SSE ----
function runPage() {
  const runId = $("#run").dataset.run, msg = $("#message");
  const data = {};  // stage -> rows
  let overlay = {};
  const series = key => Object.entries(data).map(([stage, rows], i) => ({
    name: `${stage} ${key}`, color: COLORS[(i + (key === "eval_loss" ? 1 : 0)) % COLORS.length], dots: key === "eval_loss",
    points: rows.filter(r => r[key] !== undefined && r[key] !== null).map(r => [r.step, r[key]]) }));
  function redraw() {
    const loss = [...series("loss"), ...series("eval_loss")];
    Object.entries(overlay).forEach(([stage, rows], i) => loss.push({ name: `overlay ${stage}`, dashed: true,
      color: COLORS[(i + 3) % COLORS.length], points: rows.filter(r => r.loss !== undefined).map(r => [r.step, r.loss]) }));
    drawChart($("#chart-loss"), loss);
    $("#chart-loss").dataset.points = Object.values(data).reduce((n, rows) => n + rows.filter(r => r.loss !== undefined).length, 0);
    drawChart($("#chart-lr"), series("lr"));
    drawChart($("#chart-tps"), series("tokens_per_s"));
  }
  redraw();
  const es = new EventSource(`/api/run/${runId}/stream`);
  es.addEventListener("reset", () => { for (const k in data) delete data[k]; redraw(); });
  es.addEventListener("reset-stage", e => { data[JSON.parse(e.data).stage] = []; redraw(); });
  es.addEventListener("rows", e => { const d = JSON.parse(e.data); (data[d.stage] ||= []).push(...d.rows); redraw(); });
  es.addEventListener("status", e => {
    const s = JSON.parse(e.data), st = $("#status");
    st.textContent = s.status; st.className = `status ${s.status}`;
    $("#progress").textContent = s.stages.map(g => `${g.name}: step ${g.steps}${g.total_steps ? "/" + g.total_steps : ""}` +
      (g.seconds_left != null ? `, ~${Math.round(g.seconds_left)} s left` : "")).join(" · ");
    $("#report").hidden = !s.has_report;
    $("#stop").disabled = s.status !== "running";
    $("#resume").disabled = s.status === "finished";
  });
  es.addEventListener("end", () => { es.close(); loadLog(); });
  async function loadLog() {
    for (const kind of ["train", "compare"]) {
      const { log } = await api("GET", `/api/run/${runId}/log?kind=${kind}`).catch(() => ({ log: "" }));
      if (log) $("#log").textContent = log;
    }
  }
  async function act(what) {
    try { await api("POST", `/api/run/${runId}/${what}`); show(msg, `${what}: requested`); if (what !== "stop") setTimeout(() => location.reload(), 800); }
    catch (err) { show(msg, err.message, true); }
  }
  $("#stop").onclick = () => act("stop");
  $("#resume").onclick = () => act("resume");
  $("#compare").onclick = async () => {
    try { await api("POST", `/api/run/${runId}/compare`); show(msg, "compare started: the report appears when it finishes");
      const timer = setInterval(async () => {
        const runs = await api("GET", "/api/runs"), me = runs.find(r => r.id === runId);
        if (me && me.has_report) { $("#report").hidden = false; show(msg, "report ready"); clearInterval(timer); }
        else if (me && me.exit_code) { show(msg, "compare failed:\n" + (await api("GET", `/api/run/${runId}/log?kind=compare`)).log, true); clearInterval(timer); }
      }, 1000);
    } catch (err) { show(msg, err.message, true); }
  };
  $("#overlay").onchange = async e => { overlay = e.target.value ? await api("GET", `/api/run/${e.target.value}/metrics`) : {}; redraw(); };
}

// ---- new run: validate as you type ----
function newPage() {
  const text = $("#recipe-text"), check = $("#check"), start = $("#start");
  let timer = null, seq = 0;
  async function validate() {
    const mine = ++seq;
    if (!text.value.trim()) { check.textContent = ""; start.disabled = true; return; }
    try { const r = await api("POST", "/api/recipe/check", { text: text.value });
      if (mine === seq) { show(check, `ok: recipe ${r.name}`); start.disabled = false; } }
    catch (err) { if (mine === seq) { show(check, err.message, true); start.disabled = true; } }
  }
  text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 300); });
  $("#recipe-pick").onchange = async e => {
    if (!e.target.value) return;
    try { text.value = (await api("GET", `/api/recipe?ref=${encodeURIComponent(e.target.value)}`)).text; validate(); }
    catch (err) { show(check, err.message, true); }
  };
  $("#form-build").onclick = async () => {
    const form = Object.fromEntries(new FormData($("#recipe-form")));
    try { text.value = (await api("POST", "/api/recipe/form", form)).text; validate(); } catch (err) { show(check, err.message, true); }
  };
  start.onclick = async () => {
    start.disabled = true;
    try { const r = await api("POST", "/api/runs/start", { text: text.value, ref: $("#recipe-pick").value });
      location.href = `/run/${r.run}`; }
    catch (err) { show(check, err.message, true); start.disabled = false; }
  };
  const draft = localStorage.getItem("attune-draft");
  if (draft) { text.value = draft; localStorage.removeItem("attune-draft"); validate(); }
}

// ---- data: check + inspect ----
function dataPage() {
  $("#data-form").onsubmit = async e => {
    e.preventDefault();
    const path = $("#data-path").value.trim(), format = $("#data-format").value, model = $("#data-model").value.trim();
    const summary = $("#data-summary"), list = $("#data-problems");
    list.innerHTML = ""; $("#data-examples").innerHTML = ""; $("#data-hist").innerHTML = ""; $("#data-stats").textContent = "";
    const q = `path=${encodeURIComponent(path)}&format=${format}`;
    try {
      const c = await api("GET", `/api/data/check?${q}`);
      const kinds = Object.entries(c.counts).map(([k, n]) => `${n} ${k}`).join(", ") || "no records";
      show(summary, c.ok ? `ok: ${kinds}` : `${c.problems.length} problem(s); usable: ${kinds}`, !c.ok);
      c.problems.forEach(p => { const li = document.createElement("li");
        li.innerHTML = `${esc(p.text)}${p.raw != null ? `<code>line ${p.line}: ${esc(p.raw)}</code>` : ""}`; list.append(li); });
      const ins = await api("GET", `/api/data/inspect?${q}&model=${encodeURIComponent(model)}`);
      ins.examples.forEach(ex => { const div = document.createElement("div"); div.className = "example";
        div.innerHTML = `<b>${esc(ex.source)} (${ex.kind})</b>\n` + ex.parts.map(p => (p.label ? `<b>${esc(p.label)}:</b> ` : "") +
          p.segments.map(([t, sup]) => `<span class="${sup ? "sup" : "nosup"}">${esc(t)}</span>`).join("")).join("\n");
        $("#data-examples").append(div); });
      const s = ins.stats;
      if (s.records) $("#data-stats").textContent = `${s.records} records · min ${s.min} · median ${s.median} · p95 ${s.p95} · max ${s.max} · over ${s.max_length}: ${s.over}`;
      const top = Math.max(1, ...ins.histogram.map(b => b.count));
      ins.histogram.forEach(b => { const d = document.createElement("div"); d.style.height = `${100 * b.count / top}%`;
        d.title = `${b.from}–${b.to} tokens: ${b.count}`; d.innerHTML = `<span>${b.from}</span>`; $("#data-hist").append(d); });
    } catch (err) { show(summary, err.message, true); }
  };
}

// ---- arena ----
function arenaPage() {
  const msg = $("#arena-msg");
  let round = null;
  const voteButtons = $$("#votes button");
  $$(".pick").forEach(el => el.onclick = () => {
    const ta = $("#arena-load textarea[name=adapters]"), name = el.dataset.path.split("/").slice(-5, -3).join("-").replace(/[^A-Za-z0-9_-]/g, "-");
    ta.value += `${name}=${el.dataset.path}\n`;
  });
  $("#arena-load").onsubmit = async e => {
    e.preventDefault();
    show(msg, "loading…");
    try { const r = await api("POST", "/api/arena/load", Object.fromEntries(new FormData(e.target)));
      $("#served").innerHTML = r.names.map(n => `<option>${esc(n)}</option>`).join("");
      $("#arena-setup").open = false;
      $("#arena-setup summary").textContent = `Models: ${e.target.model.value}`;
      show(msg, `served: ${r.names.join(", ")}`); } catch (err) { show(msg, err.message, true); }
  };
  function candidate(side) { return Object.fromEntries($$(`.cand[data-side=${side}] [name]`).map(i => [i.name, i.value])); }
  function stream(side) {
    return new Promise(resolve => {
      const box = $(`#answer-${side}`); box.textContent = ""; box.classList.remove("failed");
      const es = new EventSource(`/api/arena/stream/${round}/${side}?max_tokens=${encodeURIComponent($("#arena-max").value)}&temperature=${encodeURIComponent($("#arena-temp").value)}`);
      es.addEventListener("delta", e => { box.textContent += JSON.parse(e.data).text; });
      es.addEventListener("done", () => { es.close(); box.dataset.done = "1"; resolve(true); });
      es.addEventListener("failed", e => { es.close(); box.classList.add("failed"); box.textContent = JSON.parse(e.data).error; resolve(false); });
      es.onerror = () => { es.close(); resolve(false); };
    });
  }
  $("#arena-round").onsubmit = async e => {
    e.preventDefault();
    voteButtons.forEach(b => b.disabled = true);
    $$(".answer").forEach(b => delete b.dataset.done);
    try {
      const r = await api("POST", "/api/arena/round", { prompt: $("#arena-prompt").value, a: candidate("a"), b: candidate("b") });
      round = r.round; show(msg, `A: ${r.a}   B: ${r.b}`);
      const ok = await Promise.all([stream("a"), stream("b")]);
      if (ok.every(Boolean)) voteButtons.forEach(b => b.disabled = false);
    } catch (err) { show(msg, err.message, true); }
  };
  voteButtons.forEach(b => b.onclick = async () => {
    try { const r = await api("POST", "/api/arena/vote", { round, choice: b.dataset.choice, pairs: $("#arena-pairs").value });
      voteButtons.forEach(x => x.disabled = true);
      show(msg, r.pair ? `appended a preference pair to ${$("#arena-pairs").value}` : "tie recorded (no pair written)");
      table(r.table);
    } catch (err) { show(msg, err.message, true); }
  });
  function table(rows) {
    $("#arena-table tbody").innerHTML = rows.map(r => `<tr><td>${esc(r.first)}</td><td>${esc(r.second)}</td><td>${r.votes}</td>` +
      `<td>${r.first_wins}</td><td>${r.second_wins}</td><td>${r.ties}</td><td>${r.first_rate == null ? "—" :
      `${(100 * r.first_rate).toFixed(0)}% [${(100 * r.low).toFixed(0)}–${(100 * r.high).toFixed(0)}%]`}</td></tr>`).join("");
  }
  api("GET", `/api/arena/table?pairs=${encodeURIComponent($("#arena-pairs").value)}`).then(r => table(r.table)).catch(() => {});
}

// ---- advise ----
function advisePage() {
  const msg = $("#advise-msg");
  function form() {
    const out = {};
    $$("#advise-form [name]").forEach(i => { out[i.name] = i.type === "checkbox" ? i.checked : i.value; });
    return out;
  }
  $("#advise-form").onsubmit = async e => {
    e.preventDefault();
    msg.hidden = true; $("#advice").innerHTML = ""; $("#blocked").innerHTML = "";
    try {
      const a = await api("POST", "/api/advise", form());
      a.ranked.forEach(o => { const li = document.createElement("li");
        li.innerHTML = `<b>${esc(o.title)}</b> <span class="muted">score ${o.score.toFixed(1)}</span> — ${esc(o.summary)}<ul>` +
          o.reasons.map(r => `<li>${r.delta > 0 ? "why" : "against"} (${esc(r.rule)}, ${r.delta > 0 ? "+" : ""}${r.delta.toFixed(1)}): ${esc(r.text)}</li>`).join("") +
          o.risks.map(r => `<li>risk: ${esc(r)}</li>`).join("") + o.costs.map(c => `<li>cost: ${esc(c)}</li>`).join("") +
          `</ul><button data-method="${esc(o.method)}">Make it a recipe → New run</button>`;
        $("#advice").append(li); });
      if (a.blocked.length) $("#blocked").innerHTML = "<h2>Ruled out</h2><ul>" +
        a.blocked.map(o => `<li><b>${esc(o.method)}</b>: ${esc(o.blockers.join("; "))}</li>`).join("") + "</ul>";
      $$("#advice button").forEach(b => b.onclick = async () => {
        try { const r = await api("POST", "/api/advise/recipe", { method: b.dataset.method, form: form() });
          localStorage.setItem("attune-draft", r.text); location.href = "/new"; } catch (err) { show(msg, err.message, true); }
      });
    } catch (err) { show(msg, err.message, true); }
  };
}

// ---- runs list: statuses and steps refresh in place ----
function runsPage() {
  setInterval(async () => {
    const runs = await api("GET", "/api/runs").catch(() => null);
    if (!runs) return;
    for (const r of runs) {
      const row = $(`tr[data-run="${CSS.escape(r.id)}"]`);
      if (!row) continue;
      const st = $(".status", row);
      st.textContent = r.status; st.className = `status ${r.status}`;
      $$(".chip", row).forEach((chip, i) => { const g = r.stages[i]; if (!g) return;
        chip.textContent = `${g.name} (${g.objective}) ${g.steps}${g.total_steps ? "/" + g.total_steps : ""}`;
        chip.classList.toggle("done", g.done); });
    }
  }, 3000);
}

window.studioLoadedAt = Date.now();
({ runs: runsPage, run: runPage, new: newPage, data: dataPage, arena: arenaPage, advise: advisePage })[document.body.dataset.page]?.();
