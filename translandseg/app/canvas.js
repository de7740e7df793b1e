// The labeling canvas (run by gr.HTML's js_on_load with element, trigger, props, watch).
// Draws the scene the server sends (backdrop, mask fill and outline, automatic mask, prompts),
// zooms and pans on the client, and sends each finished gesture (point, box, stroke, polygon)
// to the server in canvas pixels together with the zoom and pan that map them to the picture.
(() => {
  const $ = (selector) => element.querySelector(selector);
  const canvas = $("canvas");
  const stage = $(".tls-stage");
  const ctx = canvas.getContext("2d");
  const MIN_ZOOM = 0.05, MAX_ZOOM = 64, CLICK_SLOP = 4;
  const state = {
    tool: "point", positive: true, zoom: 1, panX: 0, panY: 0, imageId: null, viewKey: null,
    layers: {}, edges: {}, scene: null, drag: null, polygon: [], hover: null, spaceHeld: false,
  };

  const load = (src) => new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = reject;
    image.src = src;
  });

  // --- the toolbar --------------------------------------------------------------------------
  const brush = $(".tls-brush"), opacity = $(".tls-opacity"), outline = $(".tls-outline"), before = $(".tls-before");
  function setTool(tool) {
    state.tool = tool;
    state.polygon = [];
    element.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("tls-on", b.dataset.tool === tool));
    stage.dataset.tool = tool;
    draw();
  }
  function setSign(positive) {
    state.positive = positive;
    element.querySelectorAll("[data-sign]").forEach((b) => b.classList.toggle("tls-on", (b.dataset.sign === "positive") === positive));
    draw();
  }
  function setBrush(size) {
    brush.value = Math.max(1, Math.min(200, Math.round(size)));
    $(".tls-brush-value").textContent = brush.value + " px";
    draw();
  }
  element.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  element.querySelectorAll("[data-sign]").forEach((b) => b.addEventListener("click", () => setSign(b.dataset.sign === "positive")));
  element.querySelectorAll("[data-zoom]").forEach((b) => b.addEventListener("click", () => {
    if (b.dataset.zoom === "fit") fit(); else zoomAt(b.dataset.zoom === "in" ? 1.5 : 1 / 1.5);
  }));
  brush.addEventListener("input", () => setBrush(+brush.value));
  [opacity, outline, before].forEach((input) => input.addEventListener("input", draw));

  // --- geometry -----------------------------------------------------------------------------
  function size() {
    return { width: canvas.width / devicePixelRatio, height: canvas.height / devicePixelRatio };
  }
  function resize() {
    const { width, height } = stage.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(width * devicePixelRatio));
    canvas.height = Math.max(1, Math.round(height * devicePixelRatio));
    draw();
  }
  function fit() {
    const scene = state.scene, { width, height } = size();
    if (!scene || !scene.width) return;
    state.zoom = Math.min(width / scene.width, height / scene.height);
    state.panX = (width - scene.width * state.zoom) / 2;
    state.panY = (height - scene.height * state.zoom) / 2;
    draw();
  }
  function zoomAt(factor, x, y) {
    const { width, height } = size();
    x = x ?? width / 2;
    y = y ?? height / 2;
    const zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, state.zoom * factor));
    state.panX = x - (x - state.panX) * (zoom / state.zoom);
    state.panY = y - (y - state.panY) * (zoom / state.zoom);
    state.zoom = zoom;
    draw();
  }
  const toScreen = ([x, y]) => [x * state.zoom + state.panX, y * state.zoom + state.panY];
  function canvasPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  // --- drawing ------------------------------------------------------------------------------
  const GREEN = "#28dc3c", RED = "#ff2828";
  function path(points, close) {
    ctx.beginPath();
    points.map(toScreen).forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (close) ctx.closePath();
  }
  function dot([x, y], positive) {
    ctx.beginPath();
    ctx.arc(x, y, 6, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? GREEN : RED;
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  function drawPrompt(p) {
    const colour = p.positive ? GREEN : RED;
    ctx.strokeStyle = colour;
    ctx.setLineDash([]);
    if (p.kind === "point") return dot(toScreen([p.x, p.y]), p.positive);
    if (p.kind === "box") {
      const [x0, y0] = toScreen([p.x0, p.y0]), [x1, y1] = toScreen([p.x1, p.y1]);
      ctx.lineWidth = 2;
      return ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    ctx.lineWidth = 1.5;
    ctx.setLineDash([4, 3]);
    path(p.points, p.kind === "polygon");
    ctx.stroke();
    ctx.setLineDash([]);
  }
  function drawGesture() {
    const drag = state.drag, colour = state.tool === "eraser" || !state.positive ? RED : GREEN;
    ctx.strokeStyle = colour;
    if (drag && drag.kind === "box") {
      const [x0, y0] = drag.start, [x1, y1] = drag.last;
      ctx.lineWidth = 2;
      ctx.setLineDash([6, 4]);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.setLineDash([]);
    }
    if (drag && drag.kind === "stroke") {
      ctx.globalAlpha = 0.5;
      ctx.lineCap = ctx.lineJoin = "round";
      ctx.lineWidth = Math.max(1, 2 * brushRadius() * state.zoom);
      ctx.beginPath();
      drag.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (drag.points.length === 1) ctx.lineTo(drag.points[0][0] + 0.01, drag.points[0][1]);
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    if (state.polygon.length) {
      ctx.lineWidth = 2;
      ctx.beginPath();
      state.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (state.hover) ctx.lineTo(...state.hover);
      ctx.stroke();
      state.polygon.forEach((p) => dot(p, state.positive));
    }
    if (state.hover && (state.tool === "brush" || state.tool === "eraser")) {
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.arc(...state.hover, Math.max(1, brushRadius() * state.zoom), 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
  function drawEdges(edges) {
    // segments along pixel edges, drawn thin at any zoom: [x0, y0, x1, y1, ...] in picture pixels
    ctx.beginPath();
    for (let i = 0; i < edges.length; i += 4) {
      ctx.moveTo(edges[i] * state.zoom + state.panX, edges[i + 1] * state.zoom + state.panY);
      ctx.lineTo(edges[i + 2] * state.zoom + state.panX, edges[i + 3] * state.zoom + state.panY);
    }
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ffe600";
    ctx.stroke();
  }
  function draw() {
    const { width, height } = size(), scene = state.scene, layers = state.layers;
    ctx.setTransform(devicePixelRatio, 0, 0, devicePixelRatio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    $(".tls-empty").style.display = scene && scene.width ? "none" : "";
    if (!scene || !scene.width || !layers.backdrop) return;
    ctx.save();
    ctx.translate(state.panX, state.panY);
    ctx.scale(state.zoom, state.zoom);
    ctx.imageSmoothingEnabled = false; // pixels stay crisp when zoomed in
    ctx.drawImage(layers.backdrop, 0, 0);
    const shown = before.checked ? "automatic" : "mask";
    ctx.globalAlpha = opacity.value / 100;
    if (layers[shown + "_fill"]) ctx.drawImage(layers[shown + "_fill"], 0, 0);
    ctx.globalAlpha = 1;
    ctx.restore();
    if (outline.checked) drawEdges(state.edges[shown] || []);
    if (!before.checked) scene.prompts.forEach(drawPrompt);
    drawGesture();
    $(".tls-zoom").textContent = Math.round(state.zoom * 100) + "%";
  }

  // --- the scene from the server ------------------------------------------------------------
  async function setScene(scene) {
    if (!scene || !scene.width) {
      state.scene = null;
      state.imageId = state.viewKey = null;
      return draw();
    }
    const names = ["backdrop", "mask_fill", "automatic_fill"]; // sent again only when they change
    const loaded = await Promise.all(names.map((name) => (scene[name] ? load(scene[name]) : null)));
    names.forEach((name, i) => { if (loaded[i]) state.layers[name] = loaded[i]; });
    ["mask", "automatic"].forEach((name) => { if (scene[name + "_edges"]) state.edges[name] = scene[name + "_edges"]; });
    const newImage = scene.image_id !== state.imageId, newView = scene.view_key !== state.viewKey;
    state.scene = scene;
    state.imageId = scene.image_id;
    state.viewKey = scene.view_key;
    if (newImage) { setTool("point"); setSign(true); before.checked = false; }
    if (newView) fit(); else draw();
  }

  // --- gestures -----------------------------------------------------------------------------
  const brushRadius = () => (+brush.value / 2) * ((state.scene && state.scene.scale) || 1); // picture pixels
  function send(kind, points, positive) {
    trigger("gesture", { kind, positive, points, zoom: state.zoom, pan: [state.panX, state.panY],
                         radius: +brush.value / 2 });
  }
  function finishPolygon() {
    if (state.polygon.length >= 3) send("polygon", state.polygon, state.positive);
    state.polygon = [];
    draw();
  }
  const panning = (event) => state.tool === "pan" || state.spaceHeld || event.button === 1;
  canvas.addEventListener("pointerdown", (event) => {
    if (!state.scene || !state.scene.width || event.button === 2) return;
    canvas.setPointerCapture(event.pointerId);
    const point = canvasPoint(event);
    if (panning(event)) {
      state.drag = { kind: "pan", last: point };
    } else if (state.tool === "brush" || state.tool === "eraser") {
      state.drag = { kind: "stroke", points: [point] };
    } else if (state.tool === "box") {
      state.drag = { kind: "box", start: point, last: point };
    } else if (state.tool === "point") {
      state.drag = { kind: "point", start: point };
    } else if (state.tool === "polygon") {
      const first = state.polygon[0];
      if (state.polygon.length >= 3 && Math.hypot(point[0] - first[0], point[1] - first[1]) < 8) finishPolygon();
      else state.polygon.push(point);
    }
    draw();
  });
  canvas.addEventListener("pointermove", (event) => {
    const point = canvasPoint(event), drag = state.drag;
    state.hover = point;
    if (drag && drag.kind === "pan") {
      state.panX += point[0] - drag.last[0];
      state.panY += point[1] - drag.last[1];
      drag.last = point;
    } else if (drag && drag.kind === "stroke") {
      const last = drag.points[drag.points.length - 1];
      if (Math.hypot(point[0] - last[0], point[1] - last[1]) >= 1) drag.points.push(point);
    } else if (drag && drag.kind === "box") {
      drag.last = point;
    }
    draw();
  });
  canvas.addEventListener("pointerup", (event) => {
    const drag = state.drag, point = canvasPoint(event);
    state.drag = null;
    if (!drag) return;
    if (drag.kind === "stroke") send("stroke", drag.points, state.tool === "brush");
    if (drag.kind === "box" && Math.abs(point[0] - drag.start[0]) > CLICK_SLOP && Math.abs(point[1] - drag.start[1]) > CLICK_SLOP)
      send("box", [drag.start, point], state.positive);
    if (drag.kind === "point" && Math.hypot(point[0] - drag.start[0], point[1] - drag.start[1]) <= CLICK_SLOP)
      send("point", [point], state.positive);
    draw();
  });
  canvas.addEventListener("pointerleave", () => { state.hover = null; draw(); });
  canvas.addEventListener("dblclick", (event) => { if (state.tool === "polygon") { event.preventDefault(); finishPolygon(); } });
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(Math.exp(-event.deltaY * 0.0015), ...canvasPoint(event));
  }, { passive: false });

  // --- keys (listed under the canvas) ---------------------------------------------------------
  const press = (id) => document.querySelector("#" + id)?.click();
  const keys = {
    c: () => setTool("point"), b: () => setTool("box"), d: () => setTool("brush"), e: () => setTool("eraser"),
    l: () => setTool("polygon"), h: () => setTool("pan"), p: () => setSign(true), n: () => setSign(false),
    f: fit, "+": () => zoomAt(1.5), "=": () => zoomAt(1.5), "-": () => zoomAt(1 / 1.5),
    "[": () => setBrush(+brush.value / 1.25), "]": () => setBrush(+brush.value * 1.25 + 1),
    o: () => { outline.checked = !outline.checked; draw(); }, a: () => { before.checked = !before.checked; draw(); },
    z: () => press("undo"), y: () => press("redo"), Enter: finishPolygon,
    Escape: () => { state.polygon = []; state.drag = null; draw(); },
    ArrowLeft: () => { state.panX += 40; draw(); }, ArrowRight: () => { state.panX -= 40; draw(); },
    ArrowUp: () => { state.panY += 40; draw(); }, ArrowDown: () => { state.panY -= 40; draw(); },
  };
  canvas.tabIndex = 0;  // focusable: while it has focus, Ctrl/Cmd+Z and Ctrl+Y undo and redo its edits
  canvas.addEventListener("pointerdown", () => canvas.focus({ preventScroll: true }));
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && !event.altKey && document.activeElement === canvas) {
      const key = event.key.toLowerCase();
      if (key === "z" || key === "y") { event.preventDefault(); press(key === "y" || event.shiftKey ? "redo" : "undo"); }
      return;
    }
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" && event.target.type !== "range" && event.target.type !== "checkbox") return;
    if (tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === " ") { state.spaceHeld = true; if (event.target === document.body) event.preventDefault(); return; }
    const action = keys[event.key];
    if (action) { event.preventDefault(); action(); }
  });
  document.addEventListener("keyup", (event) => { if (event.key === " ") state.spaceHeld = false; });

  new ResizeObserver(resize).observe(stage);
  watch("value", () => setScene(props.value));
  setTool("point");
  setSign(true);
  setBrush(+brush.value);
  resize();
  setScene(props.value);
})();
