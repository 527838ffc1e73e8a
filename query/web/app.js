// Sonde's page: a live table of every key, a panel per host an agent
// reports, and a series view. Fed by /events (Server-Sent Events, resumed
// with Last-Event-ID by the browser), /api/v1/series and the history
// routes. No build step, no dependency but uPlot (vendored).
'use strict';
(() => {
  const params = new URLSearchParams(location.search);
  // A host is stale after STALE missed intervals and removed after REMOVE
  // (7 s for a 1 s agent, as the happner demo).
  const STALE = Math.max(1, +params.get('stale') || 3);
  const REMOVE = Math.max(STALE, +params.get('remove') || 7);
  const HOST_WINDOW = 5 * 60; // seconds of a host's charts
  const SPARK_POINTS = 60;
  const ROW_H = 28;
  const OVERSCAN = 6;
  const RANGES = { '15m': 900e3, '1h': 3600e3, '6h': 6 * 3600e3, '1d': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3, '90d': 90 * 86400e3 };

  const $ = (id) => document.getElementById(id);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const colors = () => ['--s1', '--s2', '--s3', '--s4', '--s5', '--s6'].map(css);

  // What the page shows, for people and for tests (window.sonde).
  const keys = new Map(); // key → {key, value, type, updated (ms), spark: [[s], [v]], sparkAsked}
  let sorted = []; // every key, sorted
  let shown = []; // the keys the filter lets through
  let filter = null; // RegExp, or null: every key
  const hosts = new Map(); // name → host (below)
  const stats = { events: 0, resets: 0, opens: 0, loaded: Date.now() };
  const hostLog = []; // [ms, host, 'live' | 'stale' | 'removed'], the newest 100
  const noteHost = (name, what) => { hostLog.push([Date.now(), name, what]); if (hostLog.length > 100) hostLog.shift(); };
  window.sonde = { keys, hosts, stats, hostLog };

  // ---- globs, as the server reads them: * any run, ? one, \ escapes.
  const globEscape = (s) => s.replace(/[*?\\]/g, '\\$&');
  function globRegExp(g) {
    let re = '';
    for (let i = 0; i < g.length; i++) {
      const c = g[i];
      if (c === '\\' && i + 1 < g.length) re += g[++i].replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
      else if (c === '*') re += '[\\s\\S]*';
      else if (c === '?') re += '[\\s\\S]';
      else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    }
    return new RegExp('^' + re + '$', 'u');
  }

  const fmt = (v) => v == null ? '' : (Number.isInteger(v) ? String(v) : (Math.abs(v) >= 1e6 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toPrecision(6))));
  // Axis labels: 1.2k, 3.4M, 5.6G, so that big values fit the axis.
  const si = (v) => {
    const a = Math.abs(v);
    for (const [d, u] of [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) if (a >= d) return +(v / d).toPrecision(3) + u;
    return String(+v.toPrecision(3));
  };
  const siValues = (u, splits) => splits.map(si);
  const clock = (ms) => ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : '';

  // ---- a bounded queue of reads: the server serves a few at once
  // (-query-concurrency), so the page asks for at most two.
  const queue = [];
  let running = 0;
  function fetchJSON(url) {
    return new Promise((resolve, reject) => {
      queue.push({ url, resolve, reject });
      pump();
    });
  }
  function pump() {
    while (running < 2 && queue.length) {
      const { url, resolve, reject } = queue.shift();
      running++;
      fetch(url).then((r) => r.ok ? r.json() : r.text().then((t) => Promise.reject(new Error(url + ': ' + r.status + ' ' + t))))
        .then(resolve, reject).finally(() => { running--; pump(); });
    }
  }
  const quiet = (p) => p.catch((e) => { console.warn(String(e)); });

  // ---- keys
  function insertSorted(k) {
    let lo = 0, hi = sorted.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (sorted[m] < k) lo = m + 1; else hi = m; }
    sorted.splice(lo, 0, k);
  }
  function removeSorted(k) {
    let lo = 0, hi = sorted.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (sorted[m] < k) lo = m + 1; else hi = m; }
    if (sorted[lo] === k) sorted.splice(lo, 1);
  }
  function upsert(k, v, t, type) {
    let e = keys.get(k);
    if (!e) {
      e = { key: k, value: v, type: type || '', updated: t, spark: [[], []], sparkAsked: false, typeAsked: false };
      keys.set(k, e);
      insertSorted(k);
      listDirty = true;
    } else {
      e.value = v;
      if (t) e.updated = t;
      if (type) e.type = type;
    }
    return e;
  }
  function livePoint(e, v, t) {
    const [xs, ys] = e.spark;
    xs.push(t / 1000); ys.push(v);
    if (xs.length > SPARK_POINTS) { xs.shift(); ys.shift(); }
  }
  // The type (and time) of a key the stream told of: asked for rows in view only.
  // A key goes into a read as an exact glob (?match=, its * ? \\ escaped),
  // never into the path: a key "." or ".." would be a path segment the
  // browser resolves away.
  const exact = (k) => encodeURIComponent(globEscape(k));
  const seriesOf = (k) => fetchJSON('/api/v1/series?match=' + exact(k)).then((l) => l.find((s) => s.key === k) || Promise.reject(new Error('no key ' + k)));
  const historyURL = (k, q) => `/api/v1/history?match=${exact(k)}&${q}`;
  const pointsOf = (r, k) => ((r.series || []).find((s) => s.key === k) || { points: [] }).points;
  function loadType(e) {
    e.typeAsked = true;
    quiet(seriesOf(e.key).then((s) => {
      if (keys.get(e.key) !== e) return;
      e.type = s.type;
      if (!e.updated) e.updated = s.updated;
      dirty();
    }, (err) => { setTimeout(() => { e.typeAsked = false; dirty(); }, 5000); throw err; })); // asked again if still in view
  }
  function drop(k) {
    if (keys.delete(k)) { removeSorted(k); listDirty = true; }
  }

  // ---- the table: only the rows in view are in the DOM.
  const viewport = $('viewport'), spacer = $('spacer'), rowsEl = $('rows');
  const slots = []; // {el, cells, plot, key}
  let listDirty = true, frame = 0;
  function dirty() { if (!frame) frame = requestAnimationFrame(render); }
  function refilter() {
    shown = filter ? sorted.filter((k) => filter.test(k)) : sorted;
    spacer.style.height = (shown.length * ROW_H) + 'px';
    $('count').textContent = shown.length === sorted.length ? `${sorted.length} keys` : `${shown.length} of ${sorted.length} keys`;
    listDirty = false;
  }
  function slot(i) {
    while (slots.length <= i) {
      const el = document.createElement('div');
      el.className = 'row';
      el.setAttribute('role', 'row');
      el.tabIndex = 0;
      const cells = {};
      for (const c of ['key', 'value', 'type', 'updated', 'spark']) {
        const s = document.createElement('span');
        s.className = c;
        s.setAttribute('role', 'cell');
        el.appendChild(s);
        cells[c] = s;
      }
      const sl = { el, cells, plot: null, key: null, drawn: -1 };
      el.addEventListener('click', () => sl.key && openSeries(sl.key));
      el.addEventListener('keydown', (ev) => { if ((ev.key === 'Enter' || ev.key === ' ') && sl.key) { ev.preventDefault(); openSeries(sl.key); } });
      rowsEl.appendChild(el);
      slots.push(sl);
    }
    return slots[i];
  }
  function sparkPlot(sl) {
    if (sl.plot) return sl.plot;
    sl.plot = new uPlot({
      width: 120, height: 24, pxAlign: false,
      cursor: { show: false }, legend: { show: false }, select: { show: false },
      scales: { x: { time: false } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: css('--s1'), width: 1, points: { show: false } }],
    }, [[], []], sl.cells.spark);
    return sl.plot;
  }
  function render() {
    frame = 0;
    if (listDirty) refilter();
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_H) - OVERSCAN);
    const last = Math.min(shown.length, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW_H) + OVERSCAN);
    rowsEl.style.transform = `translateY(${first * ROW_H}px)`;
    const n = last - first;
    for (let i = 0; i < n; i++) {
      const sl = slot(i), e = keys.get(shown[first + i]);
      sl.el.hidden = false;
      if (sl.key !== e.key) { sl.key = e.key; sl.el.dataset.key = e.key; sl.cells.key.textContent = e.key; sl.cells.key.title = e.key; sl.drawn = -1; }
      sl.cells.value.textContent = fmt(e.value);
      sl.el.dataset.value = String(e.value);
      sl.cells.type.textContent = e.type;
      sl.cells.updated.textContent = clock(e.updated);
      if (sl.drawn !== e.spark[0].length + (e.spark[0].at(-1) || 0)) {
        sl.drawn = e.spark[0].length + (e.spark[0].at(-1) || 0);
        if (e.spark[0].length > 1) sparkPlot(sl).setData(e.spark);
        else if (sl.plot) sl.plot.setData([[], []]);
      }
      if (!e.sparkAsked) loadSpark(e);
      if (!e.type && !e.typeAsked) loadType(e);
    }
    for (let i = n; i < slots.length; i++) { slots[i].el.hidden = true; slots[i].key = null; }
  }
  viewport.addEventListener('scroll', dirty, { passive: true });
  window.addEventListener('resize', () => { dirty(); for (const h of hosts.values()) sizeHost(h); sizeSeries(); });
  function loadSpark(e) {
    e.sparkAsked = true;
    quiet(fetchJSON(historyURL(e.key, `limit=${SPARK_POINTS}`)).then((h) => {
      const cur = keys.get(e.key);
      if (cur !== e) return;
      const live = e.spark[0].length;
      const xs = [], ys = [];
      for (const [t, v] of pointsOf(h, e.key)) { if (!live || t / 1000 < e.spark[0][0]) { xs.push(t / 1000); ys.push(v); } }
      e.spark = [xs.concat(e.spark[0]).slice(-SPARK_POINTS), ys.concat(e.spark[1]).slice(-SPARK_POINTS)];
      dirty();
    }, (err) => { setTimeout(() => { e.sparkAsked = false; dirty(); }, 5000); throw err; }));
  }
  $('filter').addEventListener('input', (ev) => {
    const g = ev.target.value.trim();
    try { filter = g ? globRegExp(g) : null; ev.target.setCustomValidity(''); } catch (err) { ev.target.setCustomValidity(String(err)); return; }
    listDirty = true;
    viewport.scrollTop = 0;
    dirty();
  });

  // ---- hosts: an agent announces itself with <host>.agent.interval.
  const hostRe = /^([^.]+)\.agent\.interval$/;
  const partRe = /^([^.]+)\.([^.]+)\.(.+)$/;
  function hostOf(k) {
    const m = partRe.exec(k);
    return m && hosts.has(m[1]) ? { host: hosts.get(m[1]), group: m[2], item: m[3] } : null;
  }
  function addHost(name, interval) {
    let h = hosts.get(name);
    if (h) { h.interval = interval; return h; }
    const el = document.createElement('article');
    el.className = 'host';
    el.id = 'host-' + name;
    el.dataset.state = 'live';
    el.dataset.points = '0';
    el.setAttribute('aria-label', 'host ' + name);
    const title = document.createElement('h2');
    title.textContent = name;
    const badge = document.createElement('span');
    badge.className = 'badge';
    title.appendChild(badge);
    el.appendChild(title);
    $('hosts').appendChild(el);
    h = { name, interval, lastSeen: Date.now(), el, badge, groups: new Map(), points: 0 };
    hosts.set(name, h);
    noteHost(name, 'live');
    quiet(fetchJSON(`/api/v1/history?match=${encodeURIComponent(globEscape(name) + '.*')}&from=${Date.now() - HOST_WINDOW * 1000}`).then((r) => {
      if (hosts.get(name) !== h) return;
      for (const s of r.series || []) {
        const p = partRe.exec(s.key);
        if (!p || p[2] === 'agent') continue;
        const g = group(h, p[2]);
        const it = item(g, p[3]);
        const old = s.points.filter(([t]) => !it.xs.length || t / 1000 < it.xs[0]);
        it.xs = old.map(([t]) => t / 1000).concat(it.xs);
        it.ys = old.map(([, v]) => v).concat(it.ys);
        g.dirty = true;
      }
      hostsDirty();
    }));
    return h;
  }
  function group(h, name) {
    let g = h.groups.get(name);
    if (g) return g;
    const el = document.createElement('div');
    el.className = 'group';
    el.dataset.group = name;
    const t = document.createElement('h3');
    t.textContent = name;
    el.appendChild(t);
    const chart = document.createElement('div');
    chart.className = 'chart';
    el.appendChild(chart);
    // Groups in name order.
    const after = [...h.groups.keys()].filter((n) => n > name).sort()[0];
    h.el.insertBefore(el, after ? h.groups.get(after).el : null);
    g = { name, el, chart, items: new Map(), plot: null, dirty: true };
    h.groups.set(name, g);
    return g;
  }
  function item(g, name) {
    let it = g.items.get(name);
    if (!it) { it = { name, xs: [], ys: [] }; g.items.set(name, it); if (g.plot) { g.plot.destroy(); g.plot = null; } }
    return it;
  }
  let hostFrame = 0;
  function hostsDirty() { if (!hostFrame) hostFrame = requestAnimationFrame(drawHosts); }
  function drawHosts() {
    hostFrame = 0;
    const cut = Date.now() / 1000 - HOST_WINDOW;
    for (const h of hosts.values()) {
      let points = 0;
      for (const g of h.groups.values()) {
        if (!g.dirty) { for (const it of g.items.values()) points += it.xs.length; continue; }
        g.dirty = false;
        const items = [...g.items.values()].sort((a, b) => a.name < b.name ? -1 : 1);
        for (const it of items) {
          let i = 0;
          while (i < it.xs.length && it.xs[i] < cut) i++;
          if (i) { it.xs.splice(0, i); it.ys.splice(0, i); }
          points += it.xs.length;
        }
        const data = uPlot.join(items.map((it) => [it.xs, it.ys]));
        if (!g.plot) {
          const cs = colors();
          // Percentages get their own axis, on the right, when the group
          // mixes them with other units (disk use beside its bytes a second).
          const pct = (it) => it.name.startsWith('percent');
          const mixed = items.some(pct) && !items.every(pct);
          const axis = { stroke: css('--muted'), grid: { stroke: css('--line') }, ticks: { stroke: css('--line') }, size: 50, values: siValues };
          g.plot = new uPlot({
            width: chartWidth(h.el), height: 140,
            legend: { show: true, live: false },
            scales: { x: { time: true } },
            axes: [{ stroke: css('--muted'), grid: { stroke: css('--line') }, ticks: { stroke: css('--line') } }, axis]
              .concat(mixed ? [{ ...axis, scale: '%', side: 1, grid: { show: false }, values: (u, sp) => sp.map((v) => v + '%') }] : []),
            series: [{}].concat(items.map((it, i) => ({ label: it.name, scale: mixed && pct(it) ? '%' : 'y', stroke: cs[i % cs.length], width: 1.5, spanGaps: true, points: { show: false } }))),
          }, data, g.chart);
        } else {
          g.plot.setData(data);
        }
      }
      h.points = points;
      h.el.dataset.points = String(points);
    }
  }
  const chartWidth = (el) => Math.max(200, el.clientWidth - 20);
  function sizeHost(h) { for (const g of h.groups.values()) if (g.plot) g.plot.setSize({ width: chartWidth(h.el), height: 140 }); }
  function onHostPoint(k, v, t) {
    const m = hostRe.exec(k);
    if (m) { const h = addHost(m[1], v); h.lastSeen = Date.now(); freshen(h); return; }
    const p = hostOf(k);
    if (!p) return;
    p.host.lastSeen = Date.now();
    freshen(p.host);
    if (p.group === 'agent') return;
    const g = group(p.host, p.group);
    const it = item(g, p.item);
    it.xs.push(t / 1000); it.ys.push(v);
    g.dirty = true;
    hostsDirty();
  }
  function freshen(h) {
    if (h.el.dataset.state !== 'live') { h.el.dataset.state = 'live'; h.badge.textContent = ''; noteHost(h.name, 'live'); }
  }
  function forgetHost(name) {
    const h = hosts.get(name);
    if (!h) return;
    for (const g of h.groups.values()) if (g.plot) g.plot.destroy();
    h.el.remove();
    hosts.delete(name);
    noteHost(name, 'removed');
  }
  setInterval(() => {
    const now = Date.now();
    for (const h of hosts.values()) {
      const missed = (now - h.lastSeen) / (h.interval * 1000 || 1000);
      if (missed >= REMOVE) forgetHost(h.name);
      else if (missed >= STALE && h.el.dataset.state !== 'stale') {
        h.el.dataset.state = 'stale';
        h.badge.textContent = 'stale: quiet since ' + clock(h.lastSeen);
        noteHost(h.name, 'stale');
      }
    }
  }, 250);

  // ---- the series view
  const seriesEl = $('series');
  let view = null; // {key, type, from, to (null: now), plot, xs, ys, timer}
  function parseHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    return { key: h.get('series'), range: h.get('range') || '1h', from: h.get('from'), to: h.get('to') };
  }
  function openSeries(key, range) {
    const h = new URLSearchParams();
    h.set('series', key);
    h.set('range', range || (view && view.key === key ? view.range : '1h'));
    location.hash = h.toString();
  }
  function closeSeries() {
    if (view) { if (view.plot) view.plot.destroy(); clearInterval(view.timer); }
    view = null;
    seriesEl.hidden = true;
    history.replaceState(null, '', location.pathname + location.search);
  }
  function localInput(ms) {
    const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
    return d.toISOString().slice(0, 19);
  }
  function showHash() {
    const h = parseHash();
    if (!h.key) { if (view) closeSeries(); return; }
    if (view) { if (view.plot) view.plot.destroy(); clearInterval(view.timer); }
    const now = Date.now();
    let from, to = null, range = h.range;
    if (h.from) { from = +h.from; to = h.to ? +h.to : null; range = 'custom'; }
    else from = now - (RANGES[range] || RANGES['1h']);
    view = { key: h.key, type: '', range, from, to, plot: null, xs: [], ys: [], timer: 0 };
    seriesEl.hidden = false;
    $('series-title').textContent = h.key;
    $('series-type').textContent = '';
    for (const b of seriesEl.querySelectorAll('[data-range]')) b.setAttribute('aria-pressed', String(b.dataset.range === range));
    $('series-from').value = localInput(from);
    $('series-to').value = localInput(to || now);
    loadSeries(view);
  }
  function loadSeries(v) {
    const chart = $('series-chart');
    chart.dataset.loading = 'true';
    quiet(seriesOf(v.key).then((s) => {
      if (view !== v) return;
      v.type = s.type;
      $('series-type').textContent = s.type;
      const to = v.to || Date.now();
      const step = Math.max(1000, Math.ceil((to - v.from) / 1500 / 1000) * 1000);
      const agg = s.type === 'COUNTER' ? 'rate' : 'avg';
      const url = historyURL(v.key, `from=${v.from}&to=${to}&step=${step}&agg=${agg}`);
      chart.dataset.url = url;
      return fetchJSON(url).then((r) => {
        if (view !== v) return;
        const pts = pointsOf(r, v.key);
        v.xs = pts.map(([t]) => t / 1000);
        v.ys = pts.map(([, y]) => y);
        v.step = step;
        $('series-note').textContent = `${pts.length} points, one per ${step / 1000} s (${agg}${s.type === 'COUNTER' ? ' per second' : ''})` + (v.to ? '' : '; live');
        drawSeries(v);
        chart.dataset.loading = 'false';
        if (!v.to && s.type === 'COUNTER') v.timer = setInterval(() => { if (view === v) loadSeries(v); }, 10000);
      });
    }).catch((e) => { $('series-note').textContent = String(e.message || e); chart.dataset.loading = 'false'; throw e; }));
  }
  const seriesWidth = () => Math.max(240, seriesEl.clientWidth - 20);
  function sizeSeries() { if (view && view.plot) view.plot.setSize({ width: seriesWidth(), height: 300 }); }
  function drawSeries(v) {
    const chart = $('series-chart');
    const data = [v.xs, v.ys];
    if (!v.plot) {
      chart.textContent = '';
      v.plot = new uPlot({
        width: seriesWidth(), height: 300,
        scales: { x: { time: true } },
        axes: [{ stroke: css('--muted'), grid: { stroke: css('--line') }, ticks: { stroke: css('--line') } },
          { stroke: css('--muted'), grid: { stroke: css('--line') }, ticks: { stroke: css('--line') }, size: 60, values: siValues }],
        series: [{}, { label: v.key, stroke: css('--s1'), width: 1.5, spanGaps: false, points: { show: false } }],
      }, data, chart);
    } else {
      v.plot.setData(data);
    }
    chart.dataset.points = String(v.xs.length);
  }
  function onSeriesPoint(k, val, t) {
    if (!view || view.key !== k || view.to || view.type !== 'GAUGE' || !view.plot) return;
    const s = t / 1000, st = view.step / 1000;
    const start = Math.floor(s / st) * st;
    if (view.xs.length && view.xs.at(-1) === start) view.ys[view.ys.length - 1] = val; // the step's newest, close to its avg
    else { view.xs.push(start); view.ys.push(val); }
    drawSeries(view);
  }
  for (const b of seriesEl.querySelectorAll('[data-range]')) b.addEventListener('click', () => view && openSeries(view.key, b.dataset.range));
  $('series-apply').addEventListener('click', () => {
    if (!view) return;
    const from = new Date($('series-from').value).getTime(), to = new Date($('series-to').value).getTime();
    if (!(from < to)) { $('series-note').textContent = 'from must be before to'; return; }
    const h = new URLSearchParams();
    h.set('series', view.key); h.set('from', String(from)); h.set('to', String(to));
    location.hash = h.toString();
  });
  $('series-close').addEventListener('click', closeSeries);
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && view) closeSeries(); });
  window.addEventListener('hashchange', showHash);

  // ---- the event stream. A change is a live point at the time it came.
  // The whole state (the first frame of the first connection, or a reset
  // after a resume the server could not make exact) sets values only.
  function apply(obj, mode) {
    const t = Date.now();
    if (mode === 'reset') for (const k of [...keys.keys()]) if (!Object.hasOwn(obj, k)) { drop(k); const m = hostRe.exec(k); if (m) forgetHost(m[1]); }
    for (const [k, v] of Object.entries(obj)) {
      if (v === null) {
        drop(k);
        const m = hostRe.exec(k);
        if (m) forgetHost(m[1]);
        continue;
      }
      const e = upsert(k, v, mode === 'change' ? t : 0);
      if (mode !== 'change') continue;
      livePoint(e, v, t);
      onHostPoint(k, v, t);
      onSeriesPoint(k, v, t);
    }
    dirty();
  }
  function connect() {
    const es = new EventSource('/events');
    const status = $('status');
    let first = true; // the first frame of the first connection is the dump
    es.onopen = () => { stats.opens++; status.dataset.state = 'live'; status.textContent = 'live'; };
    es.onerror = () => { status.dataset.state = 'reconnecting'; status.textContent = 'reconnecting…'; };
    es.onmessage = (ev) => {
      stats.events++;
      apply(JSON.parse(ev.data), first && stats.opens === 1 ? 'dump' : 'change');
      first = false;
    };
    es.addEventListener('reset', (ev) => { stats.resets++; first = false; apply(JSON.parse(ev.data), 'reset'); });
  }

  // ---- the Status tab: heartbeats and events (/api/v1/heartbeats,
  // /api/v1/events and its stream), loaded when the tab is first shown.
  const statusView = $('status-view');
  const metricsEls = [...document.querySelectorAll('main > section:not(#status-view)')];
  const events = []; // newest first, at most EVENTS_KEPT
  const EVENTS_KEPT = 200;
  const heartbeats = [];
  window.sonde.events = events;
  window.sonde.heartbeats = heartbeats;
  let statusStarted = false;
  const when = (ms) => ms ? new Date(ms).toLocaleString([], { hour12: false }) : '';
  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  function drawEvents() {
    const body = $('events');
    body.replaceChildren(...events.map((ev) => {
      const tr = document.createElement('tr');
      tr.dataset.level = String(ev.level);
      tr.dataset.id = String(ev.id);
      cell(tr, when(ev.time)); cell(tr, ev.service); cell(tr, String(ev.level)); cell(tr, ev.message, 'msg');
      return tr;
    }));
    $('events-note').textContent = events.length ? '' : 'No events yet: POST /api/v1/events, or a heartbeat that goes late, writes one.';
  }
  function addEvent(ev) {
    if (events.some((e) => e.id === ev.id)) return;
    events.push(ev);
    events.sort((a, b) => b.time - a.time || b.id - a.id);
    if (events.length > EVENTS_KEPT) events.length = EVENTS_KEPT;
  }
  function loadHeartbeats() {
    return fetchJSON('/api/v1/heartbeats').then((r) => {
      heartbeats.length = 0;
      heartbeats.push(...r.heartbeats);
      $('heartbeats').replaceChildren(...heartbeats.map((h) => {
        const tr = document.createElement('tr');
        tr.dataset.state = h.state;
        tr.dataset.service = h.service;
        cell(tr, h.service); cell(tr, h.state + (h.alerted ? ' (alerted)' : '')); cell(tr, when(h.last)); cell(tr, when(h.expected)); cell(tr, h.alert);
        return tr;
      }));
      $('heartbeats-note').textContent = heartbeats.length ? '' : 'No heartbeats: POST /api/v1/heartbeats {"service","nextIn"} starts one.';
    });
  }
  function startStatus() {
    if (statusStarted) return;
    statusStarted = true;
    quiet(fetchJSON('/api/v1/events?limit=' + EVENTS_KEPT).then((r) => {
      for (const ev of r.events) addEvent(ev);
      drawEvents();
    }).finally(() => {
      // New events from here on; the browser resumes with Last-Event-ID.
      const after = events.reduce((m, ev) => Math.max(m, ev.id), 0);
      const es = new EventSource('/api/v1/events/stream' + (after ? '?after=' + after : ''));
      es.onmessage = (m) => {
        addEvent(JSON.parse(m.data));
        drawEvents();
        quiet(loadHeartbeats()); // a heartbeat's events change its state
      };
    }));
    quiet(loadHeartbeats());
    setInterval(() => { if (!statusView.hidden) quiet(loadHeartbeats()); }, 5000);
  }
  function showTab(tab) {
    const status = tab === 'status';
    statusView.hidden = !status;
    for (const el of metricsEls) el.style.display = status ? 'none' : '';
    for (const b of document.querySelectorAll('[data-tab]')) b.setAttribute('aria-pressed', String(b.dataset.tab === tab));
    if (status) startStatus();
  }
  for (const b of document.querySelectorAll('[data-tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));
  if (params.get('tab') === 'status') showTab('status');

  // The stored state first (types, update times), then the stream, whose
  // first frame is the whole state again and then every change.
  fetchJSON('/api/v1/series').then((list) => {
    const now = Date.now();
    for (const s of list) {
      upsert(s.key, s.view, 0, s.type).updated = s.updated;
      const m = hostRe.exec(s.key);
      if (m && now - s.updated < REMOVE * s.view * 1000) addHost(m[1], s.view).lastSeen = s.updated;
    }
  }).catch((e) => console.warn(String(e))).finally(() => {
    connect();
    dirty();
    showHash();
  });
})();
