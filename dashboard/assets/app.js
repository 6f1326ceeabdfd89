// AuditFlow dashboard: a small single-page app over the aggregator's public API (/api/v1).
//
// Safety rules this file keeps:
// * Every piece of data is put into the page as text (textContent / text nodes through `h`);
//   nothing from the API is ever parsed as HTML. Links from data are only followed when they
//   are http(s). The server's Content-Security-Policy forbids inline script as a second wall.
// * The token lives in sessionStorage and travels only in the Authorization header, never in
//   a cookie or a URL: another site cannot make the browser send it (no CSRF), and it does not
//   end up in logs or the history.
'use strict';
(() => {
  const TOKEN_KEY = 'auditflow.token';
  const ROLES = { viewer: 1, operator: 2, admin: 3 };
  const SEVERITIES = ['CRITICAL', 'WARNING', 'INFO'];
  const SEV_COLOR = { CRITICAL: '#c62828', WARNING: '#e09a1a', INFO: '#2466c2' };
  const STATUSES = ['open', 'acknowledged', 'resolved'];
  const main = document.getElementById('main');
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    stream: null,
    onAlert: null,
    onResync: null,
    samples: [], // [ms, events_in] from /api/v1/stats, for the events/s chart
    timers: [],
    gen: 0,
  };

  // ---- DOM helpers -------------------------------------------------------------------------

  /** Builds an element; strings and numbers become text nodes, never HTML. */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const svgNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const kid of kids.flat()) {
      if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function safeUrl(u) {
    try {
      const url = new URL(String(u));
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  const badge = (cls, text) => h('span', { class: `badge ${cls}` }, text);
  const sevBadge = (sev) => badge(`sev-${SEVERITIES.includes(sev) ? sev : 'INFO'}`, sev);
  const statusBadge = (st) => badge(`st-${STATUSES.includes(st) ? st : 'open'}`, st);
  const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '—');

  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '—';
    const d = Math.round((Date.now() - t) / 1000);
    if (d < 0) return 'just now';
    if (d < 60) return `${d}s ago`;
    if (d < 3600) return `${Math.floor(d / 60)}m ago`;
    if (d < 86400) return `${Math.floor(d / 3600)}h ago`;
    return `${Math.floor(d / 86400)}d ago`;
  }
  const when = (iso) => h('time', { datetime: iso, title: iso }, ago(iso));

  function bytes(n) {
    if (typeof n !== 'number') return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function show(...nodes) {
    main.replaceChildren(...nodes);
  }

  function errorBox(e) {
    return h('div', { class: 'error', role: 'alert' }, e instanceof ApiError ? `${e.message} (HTTP ${e.status})` : String(e && e.message ? e.message : e));
  }

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, opts = {}) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
    const init = { method: opts.method || 'GET', headers, cache: 'no-store', credentials: 'omit' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (r.status === 401) {
      signOut('The token was refused. Sign in again.');
      throw new ApiError(401, 'not signed in');
    }
    if (!r.ok) throw new ApiError(r.status, (data && (data.message || data.error)) || r.statusText);
    return data;
  }

  const can = (role) => state.me && ROLES[state.me.role] >= ROLES[role];

  // ---- Live stream (SSE over fetch, so the token goes in a header) ---------------------------

  function setLive(on) {
    const el = document.getElementById('live');
    el.className = `live ${on ? 'on' : 'off'}`;
    el.title = on ? 'Live updates: connected' : 'Live updates: reconnecting';
  }

  function handleSse(block) {
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
    }
    if (event === 'alert') {
      let msg = null;
      try { msg = JSON.parse(data); } catch (_) { return; }
      if (msg && msg.alert && state.onAlert) state.onAlert(msg.change, msg.alert);
    } else if (event === 'resync' && state.onResync) {
      state.onResync();
    }
  }

  async function runStream() {
    const ctl = new AbortController();
    state.stream = ctl;
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch('api/v1/stream', {
          headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
          cache: 'no-store',
          credentials: 'omit',
          signal: ctl.signal,
        });
        if (r.status === 401) { signOut('The token was refused. Sign in again.'); return; }
        if (!r.ok || !r.body) throw new Error(`stream: HTTP ${r.status}`);
        setLive(true);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            handleSse(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch (_) {
        if (ctl.signal.aborted) return;
      }
      setLive(false);
      // Whatever happened while away is reloaded by the page.
      if (state.onResync) state.onResync();
      await new Promise((res) => setTimeout(res, 2000));
    }
  }

  // ---- Sign-in -----------------------------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    if (state.stream) state.stream.abort();
    state.stream = null;
    document.getElementById('whoami').textContent = '';
    document.getElementById('signout').hidden = true;
    setLive(false);
    loginPage(message);
  }

  function loginPage(message) {
    clearTimers();
    const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, 'aria-label': 'API token' });
    const err = h('div');
    const form = h('form', {
      class: 'panel login',
      onsubmit: async (ev) => {
        ev.preventDefault();
        state.token = input.value.trim();
        try {
          await signIn();
          sessionStorage.setItem(TOKEN_KEY, state.token);
          if (!location.hash || location.hash === '#/login') location.hash = '#/overview';
          else route();
        } catch (e) {
          state.token = null;
          err.replaceChildren(errorBox(e.status === 401 ? 'That token is not valid.' : e));
        }
      },
    },
    h('h1', {}, 'Sign in to AuditFlow'),
    message ? h('div', { class: 'notice' }, message) : null,
    err,
    h('label', { for: 'token' }, 'API token'),
    input,
    h('button', { type: 'submit', id: 'signin' }, 'Sign in'),
    h('p', { class: 'muted' }, 'Embedded mode prints an admin token at start and keeps it in the data directory as admin.token.'));
    show(form);
    input.focus();
  }

  async function signIn() {
    const r = await fetch('api/v1/whoami', { headers: { Authorization: `Bearer ${state.token}` }, cache: 'no-store', credentials: 'omit' });
    if (!r.ok) throw new ApiError(r.status, r.status === 401 ? 'not valid' : r.statusText);
    state.me = await r.json();
    document.getElementById('whoami').textContent = `${state.me.name} (${state.me.role})`;
    document.getElementById('signout').hidden = false;
    if (!state.stream) runStream();
  }

  // ---- Router ------------------------------------------------------------------------------

  function clearTimers() {
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    state.onAlert = null;
    state.onResync = null;
  }

  function every(ms, fn) {
    state.timers.push(setInterval(() => { if (!document.hidden) fn(); }, ms));
  }

  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/overview';
    const [path, query] = raw.split('?');
    return { path, params: new URLSearchParams(query || '') };
  }

  async function route() {
    clearTimers();
    const gen = ++state.gen;
    if (!state.token) { loginPage(); return; }
    if (!state.me) {
      try { await signIn(); } catch (e) { signOut(e.status === 401 ? 'The token was refused. Sign in again.' : String(e.message || e)); return; }
    }
    const { path, params } = parseHash();
    const page = path.split('/')[1] || 'overview';
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
    const current = () => gen === state.gen;
    const m = path.match(/^\/alerts\/([0-9a-fA-F-]{36})$/);
    try {
      if (m) await alertDetail(m[1], current);
      else if (path === '/alerts') await alertsPage(params, current);
      else if (path === '/events') await eventsPage(params, current);
      else if (path === '/fleet') await fleetPage(params, current);
      else if (path === '/rules') await rulesPage(current);
      else if (path === '/channels') await channelsPage(current);
      else await overviewPage(current);
      // The page's data is on screen from the frame after next: a mark the browser timestamps
      // (performance.getEntriesByName('auditflow:ready')), which the browser test reads as the
      // time to first useful paint.
      if (current()) requestAnimationFrame(() => requestAnimationFrame(() => performance.mark('auditflow:ready', { detail: page })));
    } catch (e) {
      if (current() && !(e instanceof ApiError && e.status === 401)) show(errorBox(e));
    }
    main.focus({ preventScroll: true });
  }

  // ---- Charts (plain SVG) --------------------------------------------------------------------

  function lineChart(points, label) {
    const W = 600, H = 180, L = 44, B = 20;
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
    if (points.length < 2) {
      svg.append(s('text', { x: L, y: H / 2 }, 'collecting… (a point every 5 s)'));
      return svg;
    }
    const xs = points.map((p) => p[0]);
    const max = Math.max(1, ...points.map((p) => p[1]));
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    const X = (x) => L + ((x - x0) / Math.max(1, x1 - x0)) * (W - L - 8);
    const Y = (y) => H - B - (y / max) * (H - B - 10);
    svg.append(s('line', { x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: '#ccd' }));
    svg.append(s('text', { x: 2, y: 14 }, fmtNum(max)), s('text', { x: 2, y: H - B }, '0'));
    svg.append(s('text', { x: L, y: H - 4 }, new Date(x0).toLocaleTimeString()), s('text', { x: W - 70, y: H - 4 }, new Date(x1).toLocaleTimeString()));
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
    svg.append(s('path', { d, fill: 'none', stroke: '#2466c2', 'stroke-width': 2 }));
    return svg;
  }

  function stackedBars(buckets, from, to, bucketMs, label) {
    const W = 600, H = 180, L = 30, B = 20;
    const n = Math.max(1, Math.round((to - from) / bucketMs));
    const cols = Array.from({ length: n }, () => ({ CRITICAL: 0, WARNING: 0, INFO: 0 }));
    for (const b of buckets) {
      const i = Math.floor((Date.parse(b.start) - from) / bucketMs);
      if (i >= 0 && i < n && SEVERITIES.includes(b.severity)) cols[i][b.severity] += b.alerts;
    }
    const max = Math.max(1, ...cols.map((c) => c.CRITICAL + c.WARNING + c.INFO));
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
    const bw = (W - L - 8) / n;
    cols.forEach((c, i) => {
      let y = H - B;
      for (const sev of ['INFO', 'WARNING', 'CRITICAL']) {
        const hgt = (c[sev] / max) * (H - B - 10);
        if (hgt > 0) {
          y -= hgt;
          svg.append(s('rect', { x: L + i * bw + 1, y, width: Math.max(1, bw - 2), height: hgt, fill: SEV_COLOR[sev] },
            s('title', {}, `${new Date(from + i * bucketMs).toLocaleString()}: ${c[sev]} ${sev}`)));
        }
      }
    });
    svg.append(s('line', { x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: '#ccd' }));
    svg.append(s('text', { x: 2, y: 14 }, String(max)), s('text', { x: 2, y: H - B }, '0'));
    svg.append(s('text', { x: L, y: H - 4 }, new Date(from).toLocaleString()), s('text', { x: W - 60, y: H - 4 }, 'now'));
    return svg;
  }

  // Colours through the CSSOM: the Content-Security-Policy allows no inline style attributes.
  const legend = () => h('div', { class: 'legend' }, SEVERITIES.map((sev) => {
    const el = h('span', {}, sev);
    el.style.setProperty('--c', SEV_COLOR[sev]);
    return el;
  }));

  // ---- Overview ----------------------------------------------------------------------------

  async function sampleRate() {
    const st = await api('api/v1/stats?bucket=1h');
    const now = Date.now();
    state.samples.push([now, st.counters.events_in]);
    if (state.samples.length > 181) state.samples.shift();
    return st;
  }

  function rates() {
    const out = [];
    for (let i = 1; i < state.samples.length; i += 1) {
      const [t0, c0] = state.samples[i - 1];
      const [t1, c1] = state.samples[i];
      if (t1 > t0 && c1 >= c0) out.push([t1, ((c1 - c0) * 1000) / (t1 - t0)]);
    }
    return out;
  }

  async function overviewPage(current) {
    const load = async () => {
      const [st, open, agents, rules] = await Promise.all([
        sampleRate(),
        api('api/v1/alerts?status=open,acknowledged&limit=500'),
        api('api/v1/agents'),
        api('api/v1/rules'),
      ]);
      if (!current()) return;
      const bySev = { CRITICAL: 0, WARNING: 0, INFO: 0 };
      const byNode = new Map();
      for (const a of open.alerts) {
        if (a.severity in bySev) bySev[a.severity] += 1;
        byNode.set(a.node, (byNode.get(a.node) || 0) + 1);
      }
      const more = open.next_cursor ? '+' : '';
      const r = rates();
      const rate = r.length ? r[r.length - 1][1] : null;
      const silent = agents.agents.filter((a) => a.state === 'silent').length;
      const dropping = agents.agents.filter((a) => a.dropping).length;
      const topRules = [...rules.rules].filter((x) => x.firings > 0).sort((a, b) => b.firings - a.firings).slice(0, 5);
      const topNodes = [...byNode.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
      const from = Date.parse(st.from), to = Date.parse(st.to);
      show(
        h('h1', {}, 'Overview'),
        h('div', { class: 'cards' },
          h('div', { class: 'card', id: 'card-rate' }, h('div', { class: 'label' }, 'Events/s'), h('div', { class: 'value' }, rate === null ? '…' : fmtNum(rate)), h('div', { class: 'sub' }, `${fmtNum(st.counters.events_in)} evaluated`)),
          h('div', { class: 'card', id: 'card-open' }, h('div', { class: 'label' }, 'Open alerts'), h('div', { class: 'value' }, `${open.alerts.length}${more}`),
            h('div', { class: 'sub' }, SEVERITIES.map((sev) => [sevBadge(sev), ` ${bySev[sev]}  `]))),
          h('div', { class: 'card', id: 'card-fleet' }, h('div', { class: 'label' }, 'Agents'), h('div', { class: 'value' }, String(agents.agents.length)),
            h('div', { class: 'sub' }, `${agents.agents.length - silent} reporting, ${silent} silent, ${dropping} dropping`)),
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'Rules'), h('div', { class: 'value' }, String(rules.rules.length)),
            h('div', { class: 'sub' }, rules.last_error ? 'last reload failed' : `version ${String(rules.version || '').slice(0, 12)}`))),
        h('div', { class: 'grid' },
          h('section', { class: 'panel' }, h('h2', {}, 'Events/s (since this page opened)'), lineChart(r, 'events per second')),
          h('section', { class: 'panel' }, h('h2', {}, 'Alerts per hour, last 24 h'), stackedBars(st.buckets, from, to, st.bucket_secs * 1000, 'alerts per hour by severity'), legend())),
        h('div', { class: 'grid' },
          h('section', { class: 'panel' }, h('h2', {}, 'Top rules'), topRules.length
            ? h('ol', { class: 'top' }, topRules.map((x) => h('li', {}, h('span', {}, `${x.id} — ${x.name}`), h('b', {}, fmtNum(x.firings)))))
            : h('p', { class: 'muted' }, 'Nothing has fired yet.')),
          h('section', { class: 'panel' }, h('h2', {}, 'Nodes with open alerts'), topNodes.length
            ? h('ol', { class: 'top' }, topNodes.map(([node, n]) => h('li', {}, h('a', { href: `#/alerts?node=${encodeURIComponent(node)}&status=open,acknowledged` }, node), h('b', {}, String(n)))))
            : h('p', { class: 'muted' }, 'No open alerts.'))),
      );
    };
    await load();
    every(5000, () => load().catch(() => {}));
    let pending = null;
    state.onAlert = () => { if (!pending) pending = setTimeout(() => { pending = null; if (current()) load().catch(() => {}); }, 1000); };
  }

  // ---- Alerts ------------------------------------------------------------------------------

  const FILTERS = ['status', 'severity', 'node', 'rule', 'since', 'until', 'q'];

  function toIso(local) {
    if (!local) return '';
    const t = new Date(local);
    return Number.isNaN(t.getTime()) ? '' : t.toISOString();
  }
  function toLocal(iso) {
    const t = new Date(iso);
    if (!iso || Number.isNaN(t.getTime())) return '';
    const p = (n) => String(n).padStart(2, '0');
    return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())}T${p(t.getHours())}:${p(t.getMinutes())}`;
  }

  /** Whether an alert passes the page's filters (the server's rules, for live rows). */
  function matches(a, f) {
    const list = (v) => (v ? v.split(',').filter(Boolean) : []);
    const st = list(f.get('status'));
    if (st.length && !st.includes(a.status)) return false;
    const sev = list(f.get('severity'));
    if (sev.length && !sev.includes(a.severity)) return false;
    if (f.get('node') && a.node !== f.get('node')) return false;
    if (f.get('rule') && a.rule_id !== f.get('rule')) return false;
    const last = Date.parse(a.last_seen);
    if (f.get('since') && last < Date.parse(f.get('since'))) return false;
    if (f.get('until') && last > Date.parse(f.get('until'))) return false;
    const q = (f.get('q') || '').toLowerCase();
    if (q) {
      const hay = [a.title, a.rule_id, a.node, ...Object.values(a.group || {}).map(String)].join('\n').toLowerCase();
      if (!hay.includes(q)) return false;
    }
    return true;
  }

  function alertRow(a, fresh) {
    return h('tr', { 'data-id': a.id, class: fresh ? 'fresh' : null },
      h('td', {}, sevBadge(a.severity)),
      h('td', {}, h('a', { href: `#/alerts/${a.id}` }, a.title), a.silenced ? [' ', badge('st-shadow', 'silenced')] : null),
      h('td', { class: 'hide-narrow' }, a.rule_id),
      h('td', {}, a.node),
      h('td', {}, statusBadge(a.status)),
      h('td', { class: 'num' }, String(a.occurrences)),
      h('td', { class: 'hide-narrow' }, when(a.last_seen)));
  }

  async function alertsPage(params, current) {
    const query = new URLSearchParams();
    for (const k of FILTERS) if (params.get(k)) query.set(k, params.get(k));
    query.set('limit', '50');
    if (params.get('cursor')) query.set('cursor', params.get('cursor'));
    const data = await api(`api/v1/alerts?${query}`);
    if (!current()) return;

    const field = (name, label, input) => h('label', {}, label, input);
    const sel = (name, options) => h('select', { name, id: `f-${name}` },
      h('option', { value: '' }, 'any'),
      options.map(([v, t]) => h('option', { value: v, selected: params.get(name) === v }, t)));
    const txt = (name, placeholder) => h('input', { type: 'text', name, id: `f-${name}`, value: params.get(name) || '', placeholder });
    const dt = (name) => h('input', { type: 'datetime-local', name, id: `f-${name}`, value: toLocal(params.get(name)) });
    const form = h('form', { class: 'filters', id: 'filters', onsubmit: (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const next = new URLSearchParams();
      for (const k of FILTERS) {
        let v = String(fd.get(k) || '').trim();
        if (k === 'since' || k === 'until') v = toIso(v);
        if (v) next.set(k, v);
      }
      location.hash = `#/alerts${next.toString() ? `?${next}` : ''}`;
    } },
    field('status', 'Status', sel('status', [['open', 'open'], ['acknowledged', 'acknowledged'], ['resolved', 'resolved'], ['open,acknowledged', 'open or acknowledged']])),
    field('severity', 'Severity', sel('severity', SEVERITIES.map((x) => [x, x]))),
    field('node', 'Node', txt('node', 'pi-1')),
    field('rule', 'Rule', txt('rule', 'ANLY-SEC-001')),
    field('since', 'Since', dt('since')),
    field('until', 'Until', dt('until')),
    field('q', 'Text', txt('q', 'search')),
    h('button', { type: 'submit', id: 'apply' }, 'Apply'),
    h('button', { type: 'button', class: 'secondary', onclick: () => { location.hash = '#/alerts'; } }, 'Clear'));

    const tbody = h('tbody', { id: 'alert-rows' }, data.alerts.map((a) => alertRow(a, false)));
    const empty = h('p', { class: 'muted', id: 'no-alerts', hidden: data.alerts.length > 0 }, 'No alerts match.');
    const firstPage = !params.get('cursor');
    const pageLink = (cursor, text) => {
      const p = new URLSearchParams(params);
      if (cursor) p.set('cursor', cursor); else p.delete('cursor');
      return h('a', { class: 'button secondary', href: `#/alerts?${p}` }, text);
    };
    show(
      h('h1', {}, 'Alerts'),
      form,
      h('div', { class: 'table-wrap' }, h('table', { id: 'alerts' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Severity'), h('th', {}, 'Alert'), h('th', { class: 'hide-narrow' }, 'Rule'), h('th', {}, 'Node'),
          h('th', {}, 'Status'), h('th', { class: 'num' }, 'Count'), h('th', { class: 'hide-narrow' }, 'Last seen'))),
        tbody)),
      empty,
      h('div', { class: 'pager' },
        firstPage ? null : pageLink(null, '« First page'),
        data.next_cursor ? pageLink(data.next_cursor, 'Next page »') : null,
        h('span', { class: 'muted' }, firstPage ? 'New and changed alerts appear here live.' : 'Live updates show on the first page.')),
    );

    if (firstPage) {
      state.onAlert = (change, a) => {
        const old = tbody.querySelector(`tr[data-id="${CSS.escape(a.id)}"]`);
        if (!matches(a, params)) { if (old) old.remove(); return; }
        const row = alertRow(a, true);
        if (old) old.replaceWith(row); else tbody.prepend(row);
        empty.hidden = true;
      };
    }
    state.onResync = () => { if (current()) route(); };
    every(30000, () => tbody.querySelectorAll('time').forEach((t) => { t.textContent = ago(t.getAttribute('datetime')); }));
  }

  // ---- Alert detail ------------------------------------------------------------------------

  async function alertDetail(id, current) {
    const [a, ev] = await Promise.all([
      api(`api/v1/alerts/${encodeURIComponent(id)}`),
      api(`api/v1/alerts/${encodeURIComponent(id)}/evidence`).catch((e) => ({ error: e })),
    ]);
    if (!current()) return;
    // What else happened on the node: five minutes either side of the alert.
    const pad = 5 * 60 * 1000;
    const ctxFrom = new Date(Date.parse(a.first_seen) - pad).toISOString();
    const ctxTo = new Date(Math.min(Date.parse(a.last_seen) + pad, Date.parse(a.first_seen) + 30 * 86400000)).toISOString();
    const ctxQuery = new URLSearchParams({ node: a.node, from: ctxFrom, to: ctxTo });
    const ctx = await searchEvents(`${ctxQuery}&limit=200`).catch((e) => ({ error: e }));
    if (!current()) return;
    const comment = h('textarea', { id: 'comment', name: 'comment', placeholder: 'Comment (recorded in the history)', maxlength: 2000 });
    const msg = h('div', { id: 'action-msg' });
    const act = (action) => async () => {
      try {
        await api(`api/v1/alerts/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: { comment: comment.value } });
        route();
      } catch (e) {
        msg.replaceChildren(errorBox(e));
      }
    };
    const canAct = can('operator');
    const actions = canAct
      ? h('div', { class: 'actions' },
        h('button', { id: 'ack', onclick: act('ack'), disabled: a.status !== 'open' }, 'Acknowledge'),
        h('button', { id: 'resolve', onclick: act('resolve'), disabled: a.status === 'resolved' }, 'Resolve'),
        h('button', { id: 'reopen', class: 'secondary', onclick: act('reopen'), disabled: a.status === 'open' }, 'Reopen'),
        h('button', { id: 'silence', class: 'secondary', onclick: () => silenceForm.toggleAttribute('hidden') }, 'Silence similar…'))
      : h('p', { class: 'muted', id: 'read-only' }, `Your role (${state.me.role}) can look but not change alerts.`);

    const duration = h('select', { id: 'silence-duration' }, [['1h', '1 hour'], ['4h', '4 hours'], ['24h', '1 day'], ['168h', '1 week']].map(([v, t]) => h('option', { value: v }, t)));
    const matchers = [{ field: 'rule_id', value: a.rule_id }, ...Object.entries(a.group || {}).map(([k, v]) => ({ field: `group.${k}`, value: String(v) }))];
    const silenceForm = h('form', { class: 'panel', id: 'silence-form', hidden: true, onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await api('api/v1/silences', { method: 'POST', body: { matchers, duration: duration.value, comment: comment.value || `silenced from alert ${a.id}` } });
        msg.replaceChildren(h('div', { class: 'notice' }, 'Silenced: new alerts like this one are stored but not notified.'));
        silenceForm.hidden = true;
      } catch (e) {
        msg.replaceChildren(errorBox(e));
      }
    } },
    h('h2', {}, 'Silence alerts like this one'),
    h('ul', {}, matchers.map((m) => h('li', {}, h('code', {}, m.field), ' = ', h('code', {}, m.value)))),
    h('label', {}, 'For ', duration), ' ',
    h('button', { type: 'submit' }, 'Create silence'));

    const playbook = a.playbook_url && safeUrl(a.playbook_url);
    show(
      h('p', {}, h('a', { href: '#/alerts' }, '« Alerts')),
      h('h1', { id: 'alert-title' }, a.title),
      h('div', { class: 'grid' },
        h('section', { class: 'panel' },
          h('dl', { class: 'facts' },
            h('dt', {}, 'Status'), h('dd', { id: 'alert-status' }, statusBadge(a.status), a.silenced ? [' ', badge('st-shadow', 'silenced')] : null),
            h('dt', {}, 'Severity'), h('dd', {}, sevBadge(a.severity)),
            h('dt', {}, 'Rule'), h('dd', {}, `${a.rule_id} — ${a.rule_name}`),
            h('dt', {}, 'Node'), h('dd', {}, a.node),
            h('dt', {}, 'Group'), h('dd', { class: 'kv' }, Object.entries(a.group || {}).map(([k, v]) => h('div', {}, `${k} = ${typeof v === 'string' ? v : JSON.stringify(v)}`))),
            h('dt', {}, 'Occurrences'), h('dd', { id: 'alert-count' }, String(a.occurrences)),
            h('dt', {}, 'First seen'), h('dd', {}, when(a.first_seen), ` (${a.first_seen})`),
            h('dt', {}, 'Last seen'), h('dd', {}, when(a.last_seen), ` (${a.last_seen})`),
            h('dt', {}, 'Tags'), h('dd', {}, (a.tags || []).join(', ') || '—')),
        ),
        h('section', { class: 'panel' },
          h('h2', {}, 'What it means'),
          h('p', {}, a.rule_description),
          a.remediation ? [h('h2', {}, 'What to do'), h('p', {}, a.remediation)] : null,
          playbook ? h('p', {}, h('a', { href: playbook, rel: 'noopener noreferrer', target: '_blank' }, 'Playbook')) : null,
          h('h2', {}, 'Actions'), comment, actions, msg)),
      silenceForm,
      evidencePanel(a, ev),
      h('section', { class: 'panel', id: 'context' },
        h('h2', {}, `What else happened on ${a.node}`),
        h('p', { class: 'muted' }, `From 5 minutes before the first event to 5 minutes after the last. `,
          copyLink(`#/events?${ctxQuery}&order=asc`, 'copy-context'), ' ',
          h('a', { href: `#/fleet?node=${encodeURIComponent(a.node)}`, id: 'open-node' }, `${a.node} in the fleet`)),
        ctx.error ? errorBox(ctx.error)
          : ctx.events.length ? eventTable(ctx.events, 'context-events', a.correlation_id)
            : h('p', { class: 'muted', id: 'context-events' }, 'The archive holds no event of this node in that time (it keeps events for a limited time).')),
      h('section', { class: 'panel' }, h('h2', {}, 'History'),
        (a.history || []).length
          ? h('div', { class: 'table-wrap' }, h('table', { id: 'history' },
            h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Who'), h('th', {}, 'Change'), h('th', {}, 'Comment'))),
            h('tbody', {}, a.history.map((x) => h('tr', {}, h('td', {}, when(x.at)), h('td', {}, x.actor), h('td', {}, `${x.action}: ${x.from_status} → ${x.to_status}`), h('td', {}, x.comment))))))
          : h('p', { class: 'muted', id: 'history' }, 'No changes yet.')),
      h('section', { class: 'panel' }, h('h2', {}, 'Notifications'),
        (a.deliveries || []).length
          ? h('div', { class: 'table-wrap' }, h('table', {},
            h('thead', {}, h('tr', {}, h('th', {}, 'Channel'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Attempts'), h('th', {}, 'Last error'))),
            h('tbody', {}, a.deliveries.map((d) => h('tr', {}, h('td', {}, d.channel), h('td', {}, d.state), h('td', { class: 'num' }, String(d.attempts)), h('td', {}, d.last_error || ''))))))
          : h('p', { class: 'muted' }, 'No notification channels matched.')),
      h('details', { class: 'panel' }, h('summary', {}, 'Raw JSON'), h('pre', { id: 'raw' }, JSON.stringify(a, null, 2))),
    );
    state.onAlert = (change, x) => { if (x.id === a.id && current()) route(); };
  }

  // The events that made each of the newest firings (from the archive), as timelines; the
  // triggering event as stored with the alert when the archive no longer holds it.
  function evidencePanel(a, ev) {
    const stored = (a.evidence || []).map((e) => h('pre', { class: 'evidence' }, JSON.stringify(e, null, 2)));
    if (ev.error || !ev.firings.some((f) => f.events.length)) {
      return h('section', { class: 'panel', id: 'evidence' }, h('h2', {}, `Evidence (${stored.length} newest triggering events)`),
        ev.error ? errorBox(ev.error) : h('p', { class: 'muted' }, 'The event archive no longer holds the events around these firings; the triggering events stored with the alert:'),
        stored);
    }
    const fieldFilters = Object.entries(a.group || {}).filter(([k]) => ['user', 'src_ip', 'outcome'].includes(k));
    return h('section', { class: 'panel', id: 'evidence' },
      h('h2', {}, `Evidence: the events that made the ${ev.firings.length} newest firings`),
      ev.firings_left_out ? h('p', { class: 'muted' }, `${fmtNum(ev.firings_left_out)} older firings not shown.`) : null,
      ev.firings.map((f, i) => {
        const search = new URLSearchParams({ node: f.node, from: new Date(Date.parse(f.ts) - ev.window_ms).toISOString(), to: f.ts, order: 'asc' });
        for (const [k, v] of fieldFilters) search.set(k, String(v));
        return h('div', { class: 'firing', 'data-firing': f.firing_id },
          h('h3', {}, `Firing at ${f.ts.replace('T', ' ')} on ${f.node}: ${f.count} counted`),
          h('p', { class: 'muted' },
            f.left_out ? `${fmtNum(f.left_out)} older matching events in the window not shown. ` : '',
            f.archived ? '' : 'The triggering event is no longer archived. ',
            copyLink(`#/events?${search}`, i === 0 ? 'copy-evidence' : null)),
          f.events.length ? eventTable(f.events, i === 0 ? 'evidence-events' : null, f.event_id) : h('p', { class: 'muted' }, 'Not archived.'));
      }),
      h('details', {}, h('summary', {}, 'Triggering events as stored with the alert (legacy JSON)'), stored));
  }

  // ---- Fleet -------------------------------------------------------------------------------

  // A node's log sources as they last reported: lines read since the agent started and the
  // share of them understood; the last window's figures and the samples of lines not
  // understood in the tooltip. Marked when under half of all lines, or of the last window's,
  // were understood (the rule FLEET-SOURCE-BLIND-001 decides, with the node's thresholds).
  const sourceCells = (a) => {
    const entries = Object.entries(a.sources || {}).sort(([x], [y]) => x.localeCompare(y));
    if (!entries.length) return h('span', { class: 'muted' }, '—');
    return entries.map(([name, s]) => {
      const total = s.lines_total > 0 ? Math.round(100 * (s.lines_total - s.unparsed_total) / s.lines_total) : 100;
      const low = total < 50 || (s.lines > 0 && s.understood_pct < 50);
      const samples = ['sample_1', 'sample_2', 'sample_3'].map((k) => s[k]).filter(Boolean);
      const title = `${name}: ${fmtNum(s.lines_total)} lines read, ${fmtNum(s.unparsed_total)} not understood, `
        + `${fmtNum(s.events_total)} events since the agent started; last ${s.window_s}s: `
        + `${s.understood_pct}% of ${fmtNum(s.lines)} lines understood; reported ${s.reported_at}`
        + (samples.length ? `\nnot understood:\n${samples.join('\n')}` : '');
      return h('span', { class: `source${low ? ' st-dropping' : ''}`, 'data-source': name, title },
        `${name} ${fmtNum(s.lines_total)} · ${total}%`);
    });
  };

  async function fleetPage(params, current) {
    const load = async () => {
      const data = await api('api/v1/agents');
      if (!current()) return;
      const agents = [...data.agents].sort((x, y) => (x.state === y.state ? x.node.localeCompare(y.node) : x.state === 'silent' ? -1 : 1));
      const silent = agents.filter((a) => a.state === 'silent').length;
      const dropping = agents.filter((a) => a.dropping).length;
      show(
        h('h1', {}, 'Fleet'),
        h('div', { class: 'cards' },
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'Agents'), h('div', { class: 'value' }, String(agents.length))),
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'Silent'), h('div', { class: 'value' }, String(silent)), h('div', { class: 'sub' }, `no heartbeat for ${data.silent_after_secs}s`)),
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'Dropping'), h('div', { class: 'value' }, String(dropping)), h('div', { class: 'sub' }, 'events lost at the edge'))),
        agents.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'agents' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Node'), h('th', {}, 'State'), h('th', {}, 'Last seen'), h('th', { class: 'hide-narrow' }, 'Version'),
            h('th', { class: 'num' }, 'Events/s'), h('th', { class: 'num hide-narrow' }, 'Spool'), h('th', { class: 'num' }, 'Dropped'),
            h('th', { class: 'hide-narrow', title: 'lines read since start · share understood in the last window' }, 'Sources'))),
          h('tbody', {}, agents.map((a) => h('tr', { class: [a.state === 'silent' ? 'bad' : a.dropping ? 'warnrow' : '', a.node === params.get('node') ? 'focus' : ''].join(' ').trim() || null, 'data-node': a.node },
            h('td', {}, a.node),
            h('td', {}, badge(`st-${a.state === 'silent' ? 'silent' : 'ok'}`, a.state), a.dropping ? [' ', badge('st-dropping', 'dropping')] : null),
            h('td', {}, when(a.last_seen)),
            h('td', { class: 'hide-narrow' }, a.version),
            h('td', { class: 'num' }, fmtNum(a.events_per_s)),
            h('td', { class: 'num hide-narrow' }, bytes(a.spool_bytes)),
            h('td', { class: 'num', title: JSON.stringify(a.drops || {}) }, fmtNum(a.dropped)),
            h('td', { class: 'sources hide-narrow' }, sourceCells(a)))))))
          : h('p', { class: 'muted' }, 'No agent has sent a heartbeat yet.'),
      );
    };
    await load();
    // A link from an alert names the node: its row is marked and brought into view.
    const focus = document.querySelector('#agents tr.focus');
    if (focus) focus.scrollIntoView({ block: 'center' });
    every(10000, () => load().catch(() => {}));
  }

  // ---- Events (the archive) ------------------------------------------------------------------

  // GET /api/v1/events answers NDJSON: one event per line, then a summary line.
  async function searchEvents(query) {
    const r = await fetch(`api/v1/events?${query}`, { headers: { Authorization: `Bearer ${state.token}` }, cache: 'no-store', credentials: 'omit' });
    if (r.status === 401) {
      signOut('The token was refused. Sign in again.');
      throw new ApiError(401, 'not signed in');
    }
    if (!r.ok) {
      let data = null;
      try { data = await r.json(); } catch (_) { data = null; }
      throw new ApiError(r.status, (data && (data.message || data.error)) || r.statusText);
    }
    const lines = (await r.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const summary = lines.length && lines[lines.length - 1].summary ? lines.pop().summary : {};
    return { events: lines, summary };
  }

  // What an event says beyond the table's columns, on one line.
  const SHOWN = new Set(['id', 'ts', 'node', 'kind', 'source', 'severity', 'user', 'src_ip', 'outcome', 'fields', 'attrs']);
  function eventMessage(e) {
    const text = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
    const parts = Object.entries(e).filter(([k]) => !SHOWN.has(k)).map(([k, v]) => `${k}=${text(v)}`);
    for (const [k, v] of Object.entries(e.fields || {})) parts.push(`${k}=${text(v)}`);
    return parts.join(' ');
  }

  // Events as a timeline table; the raw JSON of each one click away. `trigger` marks a row.
  function eventTable(events, id, trigger) {
    return h('div', { class: 'table-wrap' }, h('table', { id, class: 'events' },
      h('thead', {}, h('tr', {}, ['Time', 'Node', 'Kind', 'User', 'Source address', 'Outcome', 'Message', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, events.map((e) => h('tr', { 'data-event': e.id, class: trigger === e.id ? 'trigger' : null },
        h('td', { class: 'ts' }, h('time', { datetime: e.ts, title: e.ts }, e.ts.replace('T', ' '))),
        h('td', {}, e.node), h('td', {}, e.kind), h('td', {}, e.user || ''), h('td', {}, e.src_ip || ''),
        h('td', {}, e.outcome || ''), h('td', { class: 'msg' }, eventMessage(e)),
        h('td', {}, h('details', { class: 'raw' }, h('summary', {}, 'JSON'), h('pre', {}, JSON.stringify(e, null, 2)))))))));
  }

  // A page link for everyone with access: the whole URL, to paste elsewhere.
  function copyLink(hash, id) {
    const url = `${location.origin}${location.pathname}${hash}`;
    const note = h('span', { class: 'muted', role: 'status' });
    return h('span', { class: 'copy' },
      h('a', { href: hash, id: id ? `${id}-open` : null }, 'Open search'), ' ',
      h('button', { type: 'button', class: 'secondary', id, 'data-url': url, onclick: async () => {
        try {
          await navigator.clipboard.writeText(url);
          note.textContent = ' copied';
        } catch (_) {
          // No clipboard outside a secure context: show the link to copy by hand.
          note.textContent = ` ${url}`;
        }
      } }, 'Copy link'), note);
  }

  const EVENT_FILTERS = ['node', 'kind', 'user', 'src_ip', 'outcome', 'q', 'from', 'to', 'order'];

  async function eventsPage(params, current) {
    const query = new URLSearchParams();
    for (const k of EVENT_FILTERS) if (params.get(k)) query.set(k, params.get(k));
    if (!query.get('order')) query.set('order', 'desc');
    query.set('limit', '500');
    const { events, summary } = await searchEvents(query);
    if (!current()) return;
    const field = (name, label, attrs = {}) => h('label', {}, label, h('input', { name, type: 'text', value: params.get(name) || '', ...attrs }));
    const time = (name, label) => h('label', {}, label, h('input', { name, type: 'datetime-local', value: toLocal(params.get(name)) }));
    const form = h('form', { class: 'filters', id: 'event-filters', onsubmit: (ev) => {
      ev.preventDefault();
      const next = new URLSearchParams();
      for (const el of form.elements) {
        if (!el.name || !el.value) continue;
        next.set(el.name, el.type === 'datetime-local' ? toIso(el.value) : el.value);
      }
      location.hash = `#/events${next.toString() ? `?${next}` : ''}`;
    } },
    field('node', 'Node'), field('kind', 'Kind', { placeholder: 'login,privilege' }), field('user', 'User'),
    field('src_ip', 'Address'), field('outcome', 'Outcome', { placeholder: 'success or failure' }), field('q', 'Text'),
    time('from', 'From'), time('to', 'To'),
    h('label', {}, 'Order', h('select', { name: 'order' }, [['desc', 'newest first'], ['asc', 'oldest first']].map(([v, t]) => h('option', { value: v, selected: (params.get('order') || 'desc') === v }, t)))),
    h('button', { type: 'submit' }, 'Search'));
    const range = params.get('from') || params.get('to') ? '' : ' in the last hour';
    show(
      h('h1', {}, 'Events'),
      form,
      h('p', { class: 'muted', id: 'event-summary' },
        `${fmtNum(events.length)} events${range}`, ` · ${fmtNum(summary.events_scanned || 0)} read from the archive`,
        summary.truncated ? h('strong', {}, ' · stopped early: narrow the search') : null,
        ' ', copyLink(`#/events?${new URLSearchParams([...params].filter(([k]) => EVENT_FILTERS.includes(k)))}`, 'copy-search')),
      events.length ? eventTable(events, 'event-results') : h('p', { class: 'muted', id: 'event-results' }, 'No archived event matches.'),
    );
  }

  // ---- Channels ----------------------------------------------------------------------------

  // The notification channels with the state of their deliveries; an admin can send a test
  // notification through one. Receivers show only their host: a webhook URL may be a secret.
  async function channelsPage(current) {
    const data = await api('api/v1/channels');
    if (!current()) return;
    const msg = h('div', { id: 'channel-msg' });
    const settings = (c) => [
      c.min_severity ? `from ${c.min_severity}` : null,
      c.max_updates !== undefined ? `${c.max_updates} updates, ${c.group_interval} apart` : null,
      c.max_per_hour ? `cap ${c.max_per_hour}/h` : null,
      c.quiet_hours ? `quiet ${c.quiet_hours.from}–${c.quiet_hours.to} UTC` : null,
    ].filter(Boolean).join(' · ');
    const testButton = (c) => (can('admin') && c.kind !== 'amqp'
      ? h('button', { class: 'test', 'data-channel': c.name, onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await api(`api/v1/channels/${encodeURIComponent(c.name)}/test`, { method: 'POST' });
          msg.replaceChildren(h('div', { class: 'notice' }, `Test notification delivered to ${c.name}.`));
        } catch (e) { msg.replaceChildren(errorBox(e)); }
        ev.target.disabled = false;
        if (current()) setTimeout(() => { if (current()) channelsPage(current).catch(() => {}); }, 1500);
      } }, 'Send test')
      : null);
    show(
      h('h1', {}, 'Notification channels'),
      msg,
      data.channels.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'channels' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Channel'), h('th', {}, 'Kind'), h('th', { class: 'hide-narrow' }, 'Receiver'),
          h('th', {}, 'State'), h('th', { class: 'num' }, 'Pending'), h('th', { class: 'num' }, 'Failed'),
          h('th', {}, 'Last delivery'), h('th', { class: 'hide-narrow' }, 'Settings'), h('th', {}, ''))),
        h('tbody', {}, data.channels.map((c) => h('tr', { 'data-channel': c.name, class: c.state === 'failing' ? 'warnrow' : null },
          h('td', {}, c.name),
          h('td', {}, c.kind),
          h('td', { class: 'hide-narrow' }, c.receiver || ''),
          h('td', { title: c.last_error || '' }, badge(c.state === 'failing' ? 'st-dropping' : 'st-ok', c.state),
            c.last_error ? h('div', { class: 'muted last-error' }, c.last_error) : null),
          h('td', { class: 'num' }, fmtNum(c.pending)),
          h('td', { class: 'num' }, fmtNum(c.failed)),
          h('td', {}, c.last_delivered_at ? when(c.last_delivered_at) : h('span', { class: 'muted' }, 'never')),
          h('td', { class: 'hide-narrow' }, settings(c)),
          h('td', {}, testButton(c)))))))
        : h('p', { class: 'muted' }, 'No notification channel is configured ([[notify.channels]]).'),
    );
  }

  // ---- Rules -------------------------------------------------------------------------------

  async function rulesPage(current) {
    const data = await api('api/v1/rules');
    if (!current()) return;
    const msg = h('div');
    const reload = can('admin') && data.source === 'directory'
      ? h('button', { id: 'reload', onclick: async () => {
        try {
          const r = await api('api/v1/rules/reload', { method: 'POST' });
          msg.replaceChildren(h('div', { class: 'notice' }, r.changed ? 'Reloaded.' : 'No change.'));
          setTimeout(() => { if (current()) route(); }, 800);
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      } }, 'Reload rules now')
      : null;
    // Backtest: the archive replayed through the rules in force, or through candidate rule
    // files pasted here, compared with the rules in force; nothing is written.
    const btOut = h('div', { id: 'backtest-result' });
    const btSince = h('select', { id: 'backtest-since' }, [['1h', 'last hour'], ['24h', 'last day'], ['7d', 'last week']].map(([v, t]) => h('option', { value: v }, t)));
    const btRules = h('textarea', { id: 'backtest-rules', placeholder: 'Candidate rule file (TOML). Empty: the rules in force, shadow rules included.' });
    const backtest = can('operator') ? h('section', { class: 'panel', id: 'backtest' },
      h('h2', {}, 'Backtest'),
      h('p', { class: 'muted' }, 'Replays the event archive through the real detection code without writing alerts.'),
      btRules, h('label', {}, 'Over the ', btSince), ' ',
      h('button', { id: 'backtest-run', onclick: async () => {
        btOut.replaceChildren(h('p', { class: 'muted' }, 'Replaying…'));
        try {
          const body = { since: btSince.value };
          if (btRules.value.trim()) body.rules = { 'candidate.toml': btRules.value };
          const r = await api('api/v1/rules/backtest', { method: 'POST', body });
          btOut.replaceChildren(
            h('p', { class: 'muted', id: 'backtest-summary' }, `${fmtNum(r.events)} events replayed${r.truncated ? ' (stopped early)' : ''}.`),
            h('div', { class: 'table-wrap' }, h('table', { id: 'backtest-rules-table' },
              h('thead', {}, h('tr', {}, ['Rule', 'Mode', 'Firings', 'Groups', 'In force', 'First example'].map((t) => h('th', {}, t)))),
              h('tbody', {}, r.rules.map((x) => h('tr', { 'data-rule': x.rule_id },
                h('td', {}, h('b', {}, x.rule_id), h('div', {}, x.name)),
                h('td', {}, x.mode === 'shadow' ? badge('st-shadow', 'shadow') : 'alert'),
                h('td', { class: 'num' }, fmtNum(x.firings)),
                h('td', { class: 'num' }, fmtNum(x.groups)),
                h('td', { class: 'num' }, x.in_force === null ? 'new' : fmtNum(x.in_force)),
                h('td', {}, x.examples.length ? `${x.examples[0].ts.replace('T', ' ')} ${x.examples[0].node}: ${x.examples[0].title}` : '—')))))),
            (r.only_in_force || []).length ? h('p', { class: 'muted' }, `Only in force: ${r.only_in_force.map(([id, n]) => `${id} (${n})`).join(', ')}`) : null);
        } catch (e) { btOut.replaceChildren(errorBox(e)); }
      } }, 'Run backtest'), btOut) : null;
    show(
      h('h1', {}, 'Rules'),
      data.last_error ? h('div', { class: 'error', id: 'reload-error' }, 'The last reload failed; the previous rules stay active: ', data.last_error) : null,
      h('p', { class: 'muted' }, `${data.rules.length} rules, version ${data.version || '—'}, from ${data.source === 'directory' ? 'the rule directory' : 'the shipped pack'}. `, reload),
      msg,
      h('div', { class: 'table-wrap' }, h('table', { id: 'rules' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Rule'), h('th', { class: 'hide-narrow' }, 'Kind'), h('th', {}, 'Severity'), h('th', {}, 'Mode'),
          h('th', { class: 'num' }, 'Firings'), h('th', { class: 'hide-narrow' }, 'Last fired'))),
        h('tbody', {}, data.rules.map((r) => h('tr', {},
          h('td', {}, h('b', {}, r.id), h('div', {}, r.name), h('div', { class: 'muted hide-narrow' }, r.description)),
          h('td', { class: 'hide-narrow' }, r.kind),
          h('td', {}, sevBadge(r.severity)),
          h('td', {}, r.mode === 'shadow' ? badge('st-shadow', 'shadow') : 'alert'),
          // A shadow rule's firings are counted live (never stored): its figures since the
          // aggregator started, as a backtest gives them.
          r.shadow
            ? h('td', { class: 'num', 'data-shadow': r.id, title: `${fmtNum(r.shadow.groups)} groups since the aggregator started${r.shadow.examples.length ? `; first: ${r.shadow.examples[0].join(' ')}` : ''}` }, `${fmtNum(r.shadow.firings)} (${fmtNum(r.shadow.groups)} groups)`)
            : h('td', { class: 'num' }, fmtNum(r.firings)),
          h('td', { class: 'hide-narrow' }, (r.shadow ? r.shadow.last_fired : r.last_fired) ? when(r.shadow ? r.shadow.last_fired : r.last_fired) : '—')))))),
      backtest,
    );
  }

  // ---- Start -------------------------------------------------------------------------------

  document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', route);
  route();
})();
