// The M2M hub dashboard. Hand-written, no build step, no dependencies.
//
// Data flow: the table comes from /dashboard/api/agents (the hub searches and pages its
// in-memory directory); /dashboard/events pushes `stats` (header and chart, every second)
// and `changed` (the directory moved: query the current page again).
//
// Safety: agent ids, addresses, capabilities, names and metadata are attacker-controlled.
// They are only ever written with textContent / createTextNode, never as HTML, and never
// used as URLs. The hub's Content-Security-Policy forbids inline script besides.
'use strict';

(function () {
  const PAGE = 50;
  // The header's figures, in order. A figure whose field the hub does not send is hidden:
  // relay (`relayBytesPerSec`) and mailbox (`mailboxDepth`) figures appear once the hub
  // reports them.
  const FIGURES = [
    { key: 'online', label: 'online' },
    { key: 'idle', label: 'idle' },
    { key: 'offline', label: 'offline' },
    { key: 'other', label: 'other status' },
    { key: 'connections', label: 'connections' },
    { key: 'rps', label: 'requests/s', fmt: (v) => v.toFixed(v < 10 ? 1 : 0) },
    { key: 'relayBytesPerSec', label: 'relayed B/s' },
    { key: 'mailboxDepth', label: 'mailbox' },
  ];

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  // Test and measurement hooks (read by tests/browser): no secrets, just timings.
  const probe = (window.__m2mDashboard = {
    renders: 0,
    generation: 0,
    firstRenderMs: null,
    streamOpen: false,
    lastRenderAt: 0,
  });

  const query = { q: '', capability: '', status: '', offset: 0 };
  let total = 0;
  let inFlight = false;
  let again = false;
  let history = [];
  let serverSkew = 0; // hub clock − page clock, ms

  // ---- header ----
  const figureCells = {};
  for (const f of FIGURES) {
    const box = el('div');
    box.dataset.figure = f.key;
    box.hidden = true;
    box.append(el('dt', null, f.label));
    const dd = el('dd', null, '–');
    box.append(dd);
    $('figures').append(box);
    figureCells[f.key] = { box, dd, fmt: f.fmt };
  }
  function showFigures(s) {
    for (const key of Object.keys(figureCells)) {
      const cell = figureCells[key];
      const v = s[key];
      if (typeof v !== 'number') {
        cell.box.hidden = true;
        continue;
      }
      cell.box.hidden = false;
      cell.dd.textContent = cell.fmt ? cell.fmt(v) : v.toLocaleString('en');
    }
  }

  // ---- chart ----
  function drawChart() {
    const c = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 900;
    const h = c.clientHeight || 160;
    if (c.width !== Math.round(w * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const end = Date.now() + serverSkew;
    const start = end - 15 * 60 * 1000;
    const pts = history.filter((p) => p.t >= start);
    const pad = { l: 44, r: 52, t: 8, b: 18 };
    const x = (t) => pad.l + ((t - start) / (end - start)) * (w - pad.l - pad.r);
    const maxOnline = Math.max(1, ...pts.map((p) => p.online));
    const maxRps = Math.max(1, ...pts.map((p) => p.rps));
    const y = (v, max) => h - pad.b - (v / max) * (h - pad.t - pad.b);
    g.strokeStyle = '#2a3540';
    g.fillStyle = '#8899aa';
    g.font = '11px system-ui, sans-serif';
    g.lineWidth = 1;
    for (let i = 0; i <= 3; i++) {
      const yy = pad.t + (i / 3) * (h - pad.t - pad.b);
      g.beginPath();
      g.moveTo(pad.l, yy);
      g.lineTo(w - pad.r, yy);
      g.stroke();
    }
    g.textAlign = 'right';
    g.fillText(String(maxOnline), pad.l - 4, pad.t + 10);
    g.fillText('0', pad.l - 4, h - pad.b);
    g.textAlign = 'left';
    g.fillText(String(Math.round(maxRps)), w - pad.r + 4, pad.t + 10);
    g.fillText('−15 min', pad.l, h - 4);
    g.textAlign = 'right';
    g.fillText('now', w - pad.r, h - 4);
    const line = (color, val, max) => {
      if (pts.length === 0) return;
      g.strokeStyle = color;
      g.lineWidth = 1.5;
      g.beginPath();
      pts.forEach((p, i) => (i ? g.lineTo : g.moveTo).call(g, x(p.t), y(val(p), max)));
      g.stroke();
    };
    line('#3ecf8e', (p) => p.online, maxOnline);
    line('#f07178', (p) => p.rps, maxRps);
  }

  // ---- table ----
  function ago(ms) {
    const s = Math.max(0, Math.round((Date.now() + serverSkew - ms) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }
  function statusClass(s) {
    return s === 'online' || s === 'idle' || s === 'offline' ? s : 'other';
  }
  function copyButton(text) {
    const b = el('button', 'copy', 'copy');
    b.type = 'button';
    b.title = 'copy the full id';
    b.addEventListener('click', (ev) => {
      ev.stopPropagation();
      if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    });
    return b;
  }
  function renderRows(page) {
    const body = $('rows');
    const frag = document.createDocumentFragment();
    for (const a of page.agents) {
      const tr = el('tr');
      tr.dataset.id = a.id;
      tr.dataset.status = a.status;
      const id = el('td', 'mono');
      id.append(el('span', null, a.id.slice(0, 12)), copyButton(a.id));
      id.title = a.id;
      const caps = el('td');
      for (const c of a.capabilities) caps.append(el('span', 'tag', c));
      const seen = el('td', 'seen', ago(a.lastSeen));
      seen.dataset.ms = String(a.lastSeen);
      tr.append(
        id,
        el('td', 'name', a.name || ''),
        caps,
        el('td', 'status ' + statusClass(a.status), a.status),
        seen,
        el('td', 'mono', a.address),
        el('td', a.verified ? 'yes' : 'no', a.verified ? 'verified' : 'no'),
        el('td', null, a.reachability),
      );
      tr.addEventListener('click', () => openDetail(a.id));
      frag.append(tr);
    }
    body.replaceChildren(frag);
    total = page.total;
    $('count').textContent = page.total.toLocaleString('en') + ' agents';
    const pages = Math.max(1, Math.ceil(page.total / PAGE));
    const at = Math.floor(page.offset / PAGE) + 1;
    $('page').textContent = 'page ' + at + ' of ' + pages;
    $('prev').disabled = page.offset === 0;
    $('next').disabled = page.offset + PAGE >= page.total;
    probe.renders += 1;
    probe.generation = page.generation;
    probe.lastRenderAt = performance.now();
    if (probe.firstRenderMs === null) probe.firstRenderMs = performance.now();
    document.body.dataset.generation = String(page.generation);
  }

  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const p = new URLSearchParams({
        q: query.q,
        capability: query.capability,
        status: query.status,
        offset: String(query.offset),
        limit: String(PAGE),
      });
      const r = await fetch('/dashboard/api/agents?' + p.toString(), { cache: 'no-store' });
      if (r.ok) renderRows(await r.json());
    } catch (_) {
      // The stream's reconnect brings the next refresh.
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  // ---- detail ----
  async function openDetail(id) {
    const r = await fetch('/dashboard/api/agents/' + encodeURIComponent(id), { cache: 'no-store' });
    if (!r.ok) return;
    const d = await r.json();
    $('detail-id').textContent = d.id;
    const facts = $('detail-facts');
    facts.replaceChildren();
    const fact = (k, v) => facts.append(el('dt', null, k), el('dd', 'mono', v));
    fact('status', d.status);
    fact('last seen', ago(d.lastSeen) + ' (' + new Date(d.lastSeen).toISOString() + ')');
    fact('address', d.address + ' (' + d.reachability + ')');
    fact('identity', d.verified ? 'verified 2.1 identity' : 'none (2.0 registration)');
    fact('fingerprint', d.fingerprint || '—');
    $('detail-json').textContent = JSON.stringify(d.record, null, 2);
    $('detail').hidden = false;
    $('detail').dataset.id = d.id;
  }
  $('detail-close').addEventListener('click', () => {
    $('detail').hidden = true;
  });

  // ---- controls ----
  let typing = null;
  const onInput = () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      query.q = $('q').value;
      query.capability = $('capability').value.trim();
      query.status = $('status').value;
      query.offset = 0;
      refresh();
    }, 120);
  };
  $('q').addEventListener('input', onInput);
  $('capability').addEventListener('input', onInput);
  $('status').addEventListener('change', onInput);
  $('prev').addEventListener('click', () => {
    query.offset = Math.max(0, query.offset - PAGE);
    refresh();
  });
  $('next').addEventListener('click', () => {
    if (query.offset + PAGE < total) query.offset += PAGE;
    refresh();
  });

  // ---- live ----
  function connect() {
    const es = new EventSource('/dashboard/events');
    es.addEventListener('open', () => {
      probe.streamOpen = true;
      $('live').textContent = 'live';
      $('live').classList.remove('off');
      refresh();
    });
    es.addEventListener('error', () => {
      probe.streamOpen = false;
      $('live').textContent = 'reconnecting…';
      $('live').classList.add('off');
    });
    es.addEventListener('stats', (ev) => {
      const s = JSON.parse(ev.data);
      serverSkew = s.t - Date.now();
      showFigures(s);
      const last = history[history.length - 1];
      if (!last || s.t - last.t >= 900) history.push({ t: s.t, online: s.online, rps: s.rps });
      if (history.length > 1000) history = history.slice(-900);
      drawChart();
    });
    es.addEventListener('changed', () => refresh());
  }

  async function loadHistory() {
    try {
      const r = await fetch('/dashboard/api/history', { cache: 'no-store' });
      if (r.ok) {
        const h = await r.json();
        history = h.points;
        drawChart();
      }
    } catch (_) {}
  }

  // Relative times age on screen; the rows themselves are refreshed now and then for
  // heartbeats (which do not count as directory changes).
  setInterval(() => {
    for (const td of document.querySelectorAll('td.seen')) td.textContent = ago(Number(td.dataset.ms));
  }, 1000);
  setInterval(refresh, 10000);
  window.addEventListener('resize', drawChart);

  refresh();
  loadHistory();
  connect();
})();
