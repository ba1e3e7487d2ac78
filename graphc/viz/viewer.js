// graphc graph viewer: reads the JSON in #graph-data, lays the graph out top to bottom and draws it as SVG.
// Layout: every expanded module (per phase) is a block laid out on its own and placed as one box in its
// parent, so module clusters never overlap; inside a block, longest-path layering in program order (edges
// that point back in program order, such as a reused module, are drawn but do not constrain the layers),
// then barycenter ordering and a centring x pass. Collapsed modules are one box each.
// URL hash commands (used by tests and links): #stage=cse&collapse=all&expand=layer1,layer2*&select=relu_3&zoom=0.5
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("graph-data").textContent);
  const OPT = D.optimizerModule;
  const FILL = { forward: "#dbeafe", backward: "#fde68a", optimizer: "#bbf7d0", input: "#f3f4f6" };
  const EDGE = { forward: "#3b82f6", backward: "#d97706", optimizer: "#16a34a", input: "#9ca3af" };
  const CW = 6.6, NH = 34, GAPX = 18, GAPY = 44, PAD = 12, HEAD = 22;
  const $ = (id) => document.getElementById(id);
  const svg = $("canvas"), vp = $("viewport");
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  let stage = D.initial, nodes = [], byId = new Map(), collapsed = new Set(), selected = null;
  let items = new Map(), leafOf = new Map(), edges = [];
  const view = { x: 20, y: 20, k: 1 };

  const chain = (cl) => {
    if (!cl) return [];
    const parts = cl.split("."), out = [];
    for (let i = 1; i <= parts.length; i++) out.push(parts.slice(0, i).join("."));
    return out;
  };
  const cphase = (n) => (n.ph !== "input" ? n.ph : (n.cl || "").startsWith(OPT) ? "optimizer" : "forward");

  function loadStage(i) {
    stage = i;
    const final = new Set(D.stages[D.stages.length - 1].nodes.map((j) => D.nodes[j].id));
    nodes = D.stages[i].nodes.map((j, pos) => Object.assign({}, D.nodes[j], { order: pos }));
    byId = new Map(nodes.map((n) => [n.id, n]));
    for (const n of nodes) {
      n.removed = i !== D.stages.length - 1 && !final.has(n.id);
      n.chain = chain(n.cl);
      for (const [src] of n.in || []) {
        const s = byId.get(src);
        if (s && !(s.in || []).length && !s.used) { s.used = true; s.order = n.order - 0.5; }
      }
    }
  }

  // ---- visible structure: leaves (nodes, collapsed module boxes) inside blocks (expanded modules) ----
  function build() {
    items = new Map(); leafOf = new Map();
    const root = { key: "", type: "cluster", children: [], order: Infinity, members: [] };
    items.set("", root);
    const ensure = (key, type, parent, extra) => {
      let it = items.get(key);
      if (!it) {
        it = Object.assign({ key, type, parent, children: [], order: Infinity, members: [] }, extra);
        items.set(key, it);
        items.get(parent).children.push(it);
      }
      return it;
    };
    for (const n of nodes) {
      if (n.used) continue;  // graph inputs are drawn next to each block that reads them (below)
      const ph = cphase(n);
      let parent = "", leaf = null;
      for (const p of n.chain) {
        if (collapsed.has(p)) { leaf = ensure("m:" + p + "|" + ph, "box", parent, { path: p, phase: ph }); break; }
        parent = ensure("c:" + p + "|" + ph, "cluster", parent, { path: p, phase: ph }).key;
      }
      if (!leaf) leaf = ensure("n:" + n.id, "node", parent, { node: n });
      leafOf.set(n.id, leaf.key);
      for (let it = leaf; it; it = it.parent === undefined ? null : items.get(it.parent)) {
        it.order = Math.min(it.order, n.order);
        if (n.op !== "input") it.members.push(n);
        if (it.key === "") break;
      }
    }
    // an input (or a constant) is copied into each block that uses it, so a parameter read by the forward, backward and
    // optimizer parts is drawn three times near its users rather than once with edges across the picture;
    // inputs of a collapsed box that the box's module owns are inside the box, the others become one "inputs" leaf
    const inputLeaf = (s, n, b) => {
      const t = items.get(b);
      if (t.type === "box" && s.k !== "arg") {
        // a collapsed box hides its own parameters and every constant it reads
        if (s.op !== "input" || s.cl === t.path || (s.cl || "").startsWith(t.path + ".")) return null;
        const it = ensure("i:" + b, "inputs", t.parent, { ins: [] });
        if (!it.ins.includes(s)) it.ins.push(s);
        it.order = Math.min(it.order, t.order - 0.5);
        return it.key;
      }
      const block = s.k === "arg" ? "" : t.parent;  // the function's arguments stay at the top level
      const it = ensure("n:" + s.id + "@" + block, "node", block, { node: s });
      it.order = Math.min(it.order, n.order - 0.5);
      return it.key;
    };
    const agg = new Map();
    for (const n of nodes) {
      if (!(n.in || []).length) continue;
      const b = leafOf.get(n.id);
      for (const [src, , ty] of n.in || []) {
        const s = byId.get(src);
        const a = s && s.used ? inputLeaf(s, n, b) : leafOf.get(src);
        if (a === undefined || a === null || a === b) continue;
        const k = a + "\u0000" + b;
        const e = agg.get(k);
        if (e) { e.count++; } else { agg.set(k, { a, b, ty, count: 1 }); }
      }
    }
    for (const it of items.values()) if (it.type === "inputs" && it.ins.length === 1) { it.type = "node"; it.node = it.ins[0]; }
    edges = [...agg.values()];
    for (const it of items.values()) { it.out = []; it.inn = []; }
    const ancestors = (key) => { const out = []; for (let k = items.get(key).parent; k !== undefined; k = items.get(k).parent) { out.push(k); if (k === "") break; } return out.reverse(); };
    for (const e of edges) {
      const aa = ancestors(e.a), ab = ancestors(e.b);
      let l = 0;
      while (l < aa.length && l < ab.length && aa[l] === ab[l]) l++;
      const ca = items.get(l < aa.length ? aa[l] : e.a), cb = items.get(l < ab.length ? ab[l] : e.b);
      if (ca === cb) continue;
      ca.out.push(cb); cb.inn.push(ca);
    }
    layout(root);
    place(root, 0, 0);
    return root;
  }

  function size(it) {
    let l1, l2;
    if (it.type === "node") { const n = it.node; l1 = n.op === "input" ? n.id : n.op; l2 = n.ty; }
    else if (it.type === "inputs") { l1 = it.ins.length + " input" + (it.ins.length > 1 ? "s" : ""); l2 = it.ins[0].id + (it.ins.length > 1 ? ", \u2026" : ""); }
    else { l1 = "\u25b8 " + it.path; l2 = it.phase + " \u00b7 " + it.members.length + " ops"; }
    it.l1 = l1; it.l2 = l2.length > 48 ? l2.slice(0, 47) + "\u2026" : l2;
    it.w = Math.max(56, Math.max(it.l1.length, it.l2.length) * CW + 16);
    it.h = it.type === "box" ? NH + 6 : NH;
  }

  function layout(block) {
    const ch = block.children;
    for (const c of ch) (c.type === "cluster" ? layout(c) : size(c));
    ch.sort((p, q) => p.order - q.order);
    ch.forEach((c, i) => { c.pos = i; c.layer = 0; });
    if (ch.length > 4 && ch.every((c) => !c.inn.length && !c.out.length)) return grid(block, ch);
    for (const v of ch) for (const u of v.inn) if (u.pos < v.pos) v.layer = Math.max(v.layer, u.layer + 1);
    // then as late as possible: constants, inputs and side computations (a relu mask for the backward)
    // sit just above their first user instead of at the top
    for (let i = ch.length - 1; i >= 0; i--) {
      const v = ch[i], later = v.out.filter((u) => u.pos > v.pos);
      if (later.length) v.layer = Math.max(v.layer, Math.min(...later.map((u) => u.layer)) - 1);
    }
    const layers = [];
    for (const v of ch) (layers[v.layer] = layers[v.layer] || []).push(v);
    const rank = () => layers.forEach((L) => L.forEach((v, i) => { v.r = i - (L.length - 1) / 2; }));
    const sweep = (L, nb) => {
      for (const v of L) { const ns = nb(v); v.bc = ns.length ? ns.reduce((s, u) => s + u.r, 0) / ns.length : v.r; }
      L.sort((p, q) => p.bc - q.bc);
      L.forEach((v, i) => { v.r = i - (L.length - 1) / 2; });
    };
    const preds = (v) => v.inn.filter((u) => u.pos < v.pos), succs = (v) => v.out.filter((u) => u.pos > v.pos);
    rank();
    for (let it = 0; it < 3; it++) {
      for (let l = 1; l < layers.length; l++) sweep(layers[l], preds);
      for (let l = layers.length - 2; l >= 0; l--) sweep(layers[l], succs);
    }
    for (let l = 1; l < layers.length; l++) sweep(layers[l], preds);
    // x: each item under the mean of its neighbours, no overlaps, each layer shifted to fit its wishes
    for (let pass = 0; pass < 2; pass++) {
      for (const L of layers) {
        let cursor = -Infinity, sum = 0, cnt = 0;
        for (const v of L) {
          const ns = pass === 0 ? preds(v) : preds(v).concat(succs(v).filter((u) => u.cx !== undefined));
          const want = ns.length ? ns.reduce((s, u) => s + u.cx, 0) / ns.length : undefined;
          const left = want === undefined ? (cursor === -Infinity ? 0 : cursor + GAPX) : Math.max(want - v.w / 2, cursor + GAPX);
          v.x = cursor === -Infinity && want !== undefined ? want - v.w / 2 : left;
          cursor = v.x + v.w;
          if (want !== undefined) { sum += want - (v.x + v.w / 2); cnt++; }
        }
        const shift = cnt ? sum / cnt : 0;
        for (const v of L) { v.x += shift; v.cx = v.x + v.w / 2; }
      }
    }
    let y = 0, minX = Infinity, maxX = -Infinity;
    for (const L of layers) {
      const h = Math.max(...L.map((v) => v.h));
      for (const v of L) { v.y = y; minX = Math.min(minX, v.x); maxX = Math.max(maxX, v.x + v.w); }
      y += h + GAPY;
    }
    if (!ch.length) { minX = 0; maxX = 80; y = GAPY; }
    const top = block.key === "" ? 0 : HEAD;
    for (const v of ch) { v.x += PAD - minX; v.y += top + PAD / 2; }
    block.w = Math.max(maxX - minX + 2 * PAD, block.key === "" ? 0 : (block.path.length + 16) * CW);
    block.h = y - GAPY + top + PAD * 1.5;
    for (const v of ch) delete v.cx;
  }

  // unconnected children (one update cluster per parameter in the optimizer) go in rows, not one long line
  function grid(block, ch) {
    const cols = Math.ceil(Math.sqrt(ch.length)), top = block.key === "" ? 0 : HEAD;
    let x = PAD, y = top + PAD / 2, rowH = 0, w = 0;
    ch.forEach((c, i) => {
      if (i && i % cols === 0) { x = PAD; y += rowH + GAPX; rowH = 0; }
      c.x = x; c.y = y; x += c.w + GAPX; rowH = Math.max(rowH, c.h); w = Math.max(w, x);
    });
    block.w = w - GAPX + PAD; block.h = y + rowH + PAD;
  }

  function place(it, ox, oy) {
    it.ax = ox + (it.key === "" ? 0 : it.x); it.ay = oy + (it.key === "" ? 0 : it.y);
    for (const c of it.children) place(c, it.ax, it.ay);
  }

  // ---- drawing ----
  function draw() {
    const t0 = performance.now();
    const root = build();
    const out = [], clusters = [], groups = new Map();
    const walk = (it) => {
      for (const c of it.children) {
        if (c.type === "cluster") {
          const frozen = c.members.length > 0 && c.members.every((n) => n.fz);
          clusters.push(`<g class="cluster${frozen ? " frozen" : ""}"><rect x="${c.ax}" y="${c.ay}" width="${c.w}" height="${c.h}" rx="8" fill="${FILL[c.phase]}" stroke="${EDGE[c.phase]}"/></g>` +
            `<g class="cluster-head" data-collapse="${esc(c.path)}"><rect x="${c.ax}" y="${c.ay}" width="${c.w}" height="${HEAD}" fill="transparent"/>` +
            `<text x="${c.ax + 8}" y="${c.ay + 15}" fill="${EDGE[c.phase]}">\u25be ${esc(c.path)}${c.path.startsWith(OPT) ? "" : " \u00b7 " + c.phase} (${c.members.length})</text></g>`);
          walk(c);
        } else if (c.type === "node" && c.node.g) {
          const b = groups.get(c.node.g) || { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
          b.x0 = Math.min(b.x0, c.ax); b.y0 = Math.min(b.y0, c.ay); b.x1 = Math.max(b.x1, c.ax + c.w); b.y1 = Math.max(b.y1, c.ay + c.h);
          groups.set(c.node.g, b);
        }
      }
    };
    walk(root);
    out.push(...clusters);
    for (const [g, b] of groups) {
      out.push(`<g class="group"><rect x="${b.x0 - 6}" y="${b.y0 - 14}" width="${b.x1 - b.x0 + 12}" height="${b.y1 - b.y0 + 20}" rx="6"/><text x="${b.x0 - 4}" y="${b.y0 - 4}">fused ${esc(g)}</text></g>`);
    }
    for (const e of edges) {
      const a = items.get(e.a), b = items.get(e.b);
      const x1 = a.ax + a.w / 2, y1 = a.ay + a.h, x2 = b.ax + b.w / 2, y2 = b.ay;
      let d, lx, ly, back = false;
      if (y2 > y1 + 2) {
        const m = (y2 - y1) / 2;
        d = `M${x1},${y1} C${x1},${y1 + m} ${x2},${y2 - m} ${x2},${y2}`; lx = (x1 + x2) / 2; ly = (y1 + y2) / 2;
      } else {
        back = true;
        const xs = Math.max(a.ax + a.w, b.ax + b.w) + 40, ya = a.ay + a.h / 2, yb = b.ay + b.h / 2;
        d = `M${a.ax + a.w},${ya} C${xs},${ya} ${xs},${yb} ${b.ax + b.w},${yb}`; lx = xs - 20; ly = (ya + yb) / 2;
      }
      const label = e.count > 1 ? `${e.ty} \u00d7${e.count}` : e.ty;
      out.push(`<path class="edge${back ? " back" : ""}" d="${d}" marker-end="url(#arrow)"/><text class="el" x="${lx + 3}" y="${ly}">${esc(label)}</text>`);
    }
    for (const it of items.values()) {
      if (it.type === "cluster") continue;
      const x = it.ax, y = it.ay;
      if (it.type === "node") {
        const n = it.node, cls = ["node", n.fz ? "frozen" : "", n.removed ? "removed" : "", n.res ? "result" : "",
          selected === n.id ? "selected" : ""].join(" ");
        const rx = n.op === "input" ? NH / 2 : 5;
        out.push(`<g class="${cls}" data-key="${esc(it.key)}" data-id="${esc(n.id)}"><title>${esc(n.id)}</title><rect x="${x}" y="${y}" width="${it.w}" height="${it.h}" rx="${rx}" fill="${FILL[n.ph]}" stroke="${EDGE[n.ph]}"/>` +
          `<text x="${x + it.w / 2}" y="${y + 14}" text-anchor="middle" font-size="11" font-weight="bold">${esc(it.l1)}</text>` +
          `<text x="${x + it.w / 2}" y="${y + 27}" text-anchor="middle" font-size="10" fill="#374151">${esc(it.l2)}</text></g>`);
      } else if (it.type === "inputs") {
        const frozen = it.ins.every((n) => n.fz);
        out.push(`<g class="node${frozen ? " frozen" : ""}" data-key="${esc(it.key)}"><title>${esc(it.ins.map((n) => n.id).join(", "))}</title>` +
          `<rect x="${x}" y="${y}" width="${it.w}" height="${it.h}" rx="${NH / 2}" fill="${FILL.input}" stroke="${EDGE.input}" stroke-dasharray="3 2"/>` +
          `<text x="${x + it.w / 2}" y="${y + 14}" text-anchor="middle" font-size="11" font-weight="bold">${esc(it.l1)}</text>` +
          `<text x="${x + it.w / 2}" y="${y + 27}" text-anchor="middle" font-size="10" fill="#374151">${esc(it.l2)}</text></g>`);
      } else {
        const frozen = it.members.length > 0 && it.members.every((n) => n.fz);
        out.push(`<g class="box${frozen ? " frozen" : ""}${selected === it.key ? " selected" : ""}" data-key="${esc(it.key)}" data-expand="${esc(it.path)}"><title>${esc(it.path)}: click to expand</title>` +
          `<rect x="${x + 3}" y="${y + 3}" width="${it.w}" height="${it.h}" rx="6" fill="#fff" stroke="${EDGE[it.phase]}"/>` +
          `<rect x="${x}" y="${y}" width="${it.w}" height="${it.h}" rx="6" fill="${FILL[it.phase]}" stroke="${EDGE[it.phase]}" stroke-width="1.6"/>` +
          `<text x="${x + it.w / 2}" y="${y + 16}" text-anchor="middle" font-size="11" font-weight="bold">${esc(it.l1)}</text>` +
          `<text x="${x + it.w / 2}" y="${y + 30}" text-anchor="middle" font-size="10" fill="#374151">${esc(it.l2)}</text></g>`);
      }
    }
    vp.innerHTML = out.join("");
    const leaves = [...items.values()].filter((it) => it.type !== "cluster").length;
    $("title").textContent = D.name;
    $("stage-name").textContent = "stage: " + D.stages[stage].name;
    $("counts").textContent = `${nodes.length} values and ops, ${leaves} shown`;
    document.body.dataset.shown = String(leaves);
    document.body.dataset.size = `${Math.round(root.w)}x${Math.round(root.h)}`;
    document.body.dataset.ms = String(Math.round(performance.now() - t0));  // layout + drawing time
    drawSide();
    return root;
  }

  function drawSide() {
    const rows = D.stages.map((s, i) => {
      const prev = i ? D.stages[i - 1].ops : null, delta = prev === null ? "" : s.ops - prev;
      return `<tr data-stage="${i}" class="${i === stage ? "current" : ""}"><td>${esc(s.name)}</td><td class="num">${s.ops} ops</td>` +
        `<td class="num">${delta === "" || delta === 0 ? "" : (delta > 0 ? "+" : "") + delta}</td><td class="num">${s.ms === null || s.ms === undefined ? "" : s.ms.toFixed(1) + " ms"}</td></tr>`;
    });
    $("stages").innerHTML = "<tr><th>stage</th><th>nodes</th><th>\u0394</th><th>time</th></tr>" + rows.join("");
    const counts = new Map();
    for (const n of nodes) if (!n.used) for (const p of n.chain) counts.set(p, (counts.get(p) || 0) + 1);
    const tree = (path) => {
      const kids = (D.modules[path] || []).filter((c) => counts.has(c));
      if (!kids.length) return "";
      return "<ul>" + kids.map((c) => `<li><span data-toggle="${esc(c)}">${collapsed.has(c) ? "\u25b8" : "\u25be"} ${esc(c.slice(path.length ? path.length + 1 : 0))}</span> <span class="count">${counts.get(c)}</span>` +
        (collapsed.has(c) ? "" : tree(c)) + "</li>").join("") + "</ul>";
    };
    $("tree").innerHTML = tree("") || '<p class="hint">no modules recorded</p>';
  }

  function showDetails(key) {
    const it = items.get(key);
    if (!it) return;
    selected = it.type === "node" ? it.node.id : key;
    const rows = [];
    const row = (k, v) => rows.push(`<tr><td>${esc(k)}</td><td>${v}</td></tr>`);
    if (it.type === "node") {
      const n = it.node;
      row("value", esc(n.id));
      row("type", esc(n.ty));
      if (n.outs) row("outputs", n.outs.map(([v, t]) => `${esc(v)}: ${esc(t)}`).join("<br>"));
      if (n.k) row("input kind", esc(n.k) + (n.k === "param" && n.fz ? " (requires_grad=False)" : ""));
      for (const [v, a] of Object.entries(n.at || {})) row(v, esc(a));
      if ((n.in || []).length) row("inputs", n.in.map(([, v, t]) => `%${esc(v)}: ${esc(t)}`).join("<br>"));
      row("phase", esc(n.ph));
      row("module", esc(n.mod || "(top level)"));
      if (n.op !== "input") row("source", esc(n.src || "(unknown)"));
      if (n.fz) row("frozen", n.op === "input" ? "yes: does not require grad" : "yes: no input depends on a value that requires grad");
      if (n.removed) row("passes", "removed by a later pass");
      if (n.g) row("fused group", esc(n.g));
      if (n.res) row("graph output", n.res.map(esc).join("<br>"));
      $("details").innerHTML = `<div class="op">${esc(n.op)}</div><table>${rows.join("")}</table>`;
    } else if (it.type === "inputs") {
      row("inputs", it.ins.map((n) => `%${esc(n.id)}: ${esc(n.ty)}${n.k ? " (" + esc(n.k) + ")" : ""}`).join("<br>"));
      $("details").innerHTML = `<div class="op">${it.ins.length} graph inputs</div><table>${rows.join("")}</table>`;
    } else {
      const ops = new Map();
      for (const n of it.members) ops.set(n.op, (ops.get(n.op) || 0) + 1);
      row("phase", esc(it.phase));
      row("nodes", String(it.members.length));
      row("ops", [...ops].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([o, c]) => `${esc(o)} \u00d7${c}`).join("<br>"));
      $("details").innerHTML = `<div class="op">${esc(it.path)}</div><table>${rows.join("")}</table>`;
    }
  }

  // ---- interaction ----
  function apply() { vp.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`); svg.classList.toggle("zoomed-out", view.k < 0.55); }
  // whole: the whole graph however small; otherwise a tall graph opens at a readable scale, top first
  function fit(root, whole) {
    const W = svg.clientWidth || 800, H = svg.clientHeight || 600;
    let k = Math.min((W - 40) / root.w, (H - 40) / root.h, 1.2);
    if (!whole && k < 0.6) k = Math.max(0.3, Math.min(1, (W - 40) / root.w));
    view.k = k; view.x = (W - root.w * k) / 2; view.y = 20;
    apply();
  }
  function center(key) {  // scroll an item into the middle of the view, unless it is already in view
    const it = items.get(key);
    if (!it) return;
    const sx = view.x + it.ax * view.k, sy = view.y + it.ay * view.k, W = svg.clientWidth || 800, H = svg.clientHeight || 600;
    if (sx >= 0 && sy >= 0 && sx + it.w * view.k <= W && sy + it.h * view.k <= H) return;
    view.x = (svg.clientWidth || 800) / 2 - (it.ax + it.w / 2) * view.k;
    view.y = (svg.clientHeight || 600) / 2 - (it.ay + it.h / 2) * view.k;
    apply();
  }
  function reveal(id) { const n = byId.get(id); if (n) for (const p of n.chain) collapsed.delete(p); }
  function select(id) {
    if (!byId.has(id)) return false;
    reveal(id); draw();
    const el = vp.querySelector(`[data-id="${CSS.escape(id)}"]`);
    el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    center(el.dataset.key);
    return true;
  }

  let drag = null, moved = false;
  svg.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y }; moved = false; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { moved = true; svg.classList.add("dragging"); }
    view.x = drag.vx + dx; view.y = drag.vy + dy; apply();
  });
  window.addEventListener("mouseup", () => { drag = null; svg.classList.remove("dragging"); });
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
    const k = Math.min(4, Math.max(0.02, view.k * Math.exp(-e.deltaY * 0.0015)));
    view.x = mx - ((mx - view.x) / view.k) * k; view.y = my - ((my - view.y) / view.k) * k; view.k = k; apply();
  }, { passive: false });
  svg.addEventListener("click", (e) => {
    if (moved) { moved = false; return; }
    const t = e.target.closest("[data-key],[data-collapse]");
    if (!t) return;
    if (t.dataset.collapse !== undefined) { collapsed.add(t.dataset.collapse); draw(); return; }
    if (t.dataset.expand !== undefined) { collapsed.delete(t.dataset.expand); showDetails(t.dataset.key); draw(); return; }
    showDetails(t.dataset.key);
    vp.querySelectorAll(".selected").forEach((x) => x.classList.remove("selected"));
    t.classList.add("selected");
  });
  $("stages").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-stage]");
    if (tr) { loadStage(+tr.dataset.stage); draw(); }
  });
  $("tree").addEventListener("click", (e) => {
    const s = e.target.closest("[data-toggle]");
    if (!s) return;
    const p = s.dataset.toggle;
    if (collapsed.has(p)) collapsed.delete(p); else collapsed.add(p);
    draw();
  });
  const allModules = () => Object.keys(D.modules).filter((p) => p);
  $("fit").onclick = () => fit(build(), true);
  $("expand-all").onclick = () => { collapsed.clear(); fit(draw()); };
  $("collapse-all").onclick = () => { allModules().forEach((p) => collapsed.add(p)); fit(draw()); };
  $("search").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const q = e.target.value.trim();
    const hit = byId.has(q) ? q : (nodes.find((n) => n.id.includes(q)) || nodes.find((n) => n.op === q) || {}).id;
    if (hit) select(hit);
  });
  $("legend").innerHTML = ["forward", "backward", "optimizer", "input"].map((p) => `<div><i style="background:${FILL[p]};border-color:${EDGE[p]}"></i>${p}</div>`).join("") +
    '<div><i style="background:#dbeafe;border-color:#3b82f6;opacity:.35"></i>frozen (no gradient flows)</div>' +
    '<div><i style="border-style:dashed;opacity:.5"></i>removed by a later pass</div>' +
    '<div><i style="border:2px dashed #7c3aed"></i>fused group</div>' +
    '<div><i style="border-width:2.5px"></i>graph output (result or state update)</div>' +
    '<div><i style="border:1.5px solid #3b82f6;box-shadow:3px 3px 0 #fff,3px 3px 0 1px #3b82f6"></i>collapsed module (click)</div>';

  function fromHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.has("stage")) {
      const s = h.get("stage"), i = D.stages.findIndex((x) => x.name === s);
      loadStage(i >= 0 ? i : Math.min(D.stages.length - 1, Math.max(0, +s || 0)));
    }
    for (const p of (h.get("collapse") || "").split(",").filter(Boolean)) (p === "all" ? allModules() : [p]).forEach((q) => collapsed.add(q));
    for (const p of (h.get("expand") || "").split(",").filter(Boolean)) {  // "layer1*": layer1 and all inside it
      if (p === "all") collapsed.clear();
      else if (p.endsWith("*")) [...collapsed].filter((q) => q === p.slice(0, -1) || q.startsWith(p.slice(0, -1) + ".")).forEach((q) => collapsed.delete(q));
      else collapsed.delete(p);
    }
    const root = draw();
    fit(root);
    if (h.has("zoom")) { view.k = +h.get("zoom"); view.x = ((svg.clientWidth || 800) - root.w * view.k) / 2; view.y = 10; apply(); }
    if (h.has("select")) select(h.get("select"));
    document.body.dataset.ready = "1";
  }

  loadStage(stage);
  if (nodes.length > D.collapseAbove) allModules().forEach((p) => collapsed.add(p));
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
