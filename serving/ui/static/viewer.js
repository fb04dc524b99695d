// RadGate case viewer: window/level, zoom/pan and an attribution overlay on one canvas.
(function () {
  "use strict";
  const root = document.getElementById("viewer");
  if (!root) return;
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const $ = (id) => document.getElementById(id);
  const state = { data: null, zoom: 1, panX: 0, panY: 0, drag: null };
  const off = document.createElement("canvas");

  function b64(text) {
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  // Jet-like colour map for the attribution, 256 entries.
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const v = i / 255;
    lut[i * 3] = 255 * Math.min(Math.max(1.5 - Math.abs(4 * v - 3), 0), 1);
    lut[i * 3 + 1] = 255 * Math.min(Math.max(1.5 - Math.abs(4 * v - 2), 0), 1);
    lut[i * 3 + 2] = 255 * Math.min(Math.max(1.5 - Math.abs(4 * v - 1), 0), 1);
  }

  function compose() {
    const d = state.data;
    if (!d) return;
    const width = Number($("window").value) / 100;
    const level = Number($("level").value) / 100;
    const lo = (level - width / 2) * 65535;
    const span = Math.max(width * 65535, 1);
    const showOverlay = $("overlay").checked;
    const alpha = Number($("opacity").value) / 100;
    off.width = d.width;
    off.height = d.height;
    const octx = off.getContext("2d");
    const img = octx.createImageData(d.width, d.height);
    const px = img.data;
    for (let i = 0; i < d.width * d.height; i++) {
      let g = ((d.pixels[i] - lo) / span) * 255;
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      let r = g, gr = g, b = g;
      const a = d.map[i];
      if (showOverlay && a > 51) {  // below 20% the map is not drawn (as the PNG overlay)
        const k = alpha * (a / 255);
        r = r * (1 - k) + lut[a * 3] * k;
        gr = gr * (1 - k) + lut[a * 3 + 1] * k;
        b = b * (1 - k) + lut[a * 3 + 2] * k;
      }
      px[i * 4] = r; px[i * 4 + 1] = gr; px[i * 4 + 2] = b; px[i * 4 + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    draw();
  }

  function draw() {
    const d = state.data;
    if (!d) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const fit = Math.min(canvas.width / d.width, canvas.height / d.height) * state.zoom;
    ctx.imageSmoothingEnabled = false;
    ctx.setTransform(fit, 0, 0, fit,
      canvas.width / 2 - (d.width * fit) / 2 + state.panX,
      canvas.height / 2 - (d.height * fit) / 2 + state.panY);
    ctx.drawImage(off, 0, 0);
    $("zoom-out").textContent = state.zoom.toFixed(1);
    root.dataset.overlay = $("overlay").checked ? "on" : "off";
    root.dataset.opacity = $("opacity").value;
  }

  function setZoom(z) {
    state.zoom = Math.min(Math.max(z, 1), 8);
    $("zoom").value = Math.round(state.zoom * 10);
    draw();
  }

  async function load() {
    root.dataset.ready = "loading";
    const method = $("method").value;
    const res = await fetch(root.dataset.base + "/" + encodeURIComponent(method), { credentials: "same-origin" });
    if (!res.ok) { root.dataset.ready = "error"; return; }
    const json = await res.json();
    const raw = b64(json.image);
    state.data = {
      width: json.width, height: json.height,
      pixels: new Uint16Array(raw.buffer, 0, json.width * json.height),
      map: b64(json.attribution),
    };
    compose();
    root.dataset.ready = "yes";
  }

  for (const id of ["window", "level", "opacity"]) {
    $(id).addEventListener("input", () => { $(id + "-out").textContent = $(id).value; compose(); });
  }
  $("overlay").addEventListener("change", compose);
  $("method").addEventListener("change", load);
  $("zoom").addEventListener("input", () => setZoom(Number($("zoom").value) / 10));
  $("reset").addEventListener("click", () => {
    state.panX = 0; state.panY = 0; $("window").value = 100; $("level").value = 50;
    $("window-out").textContent = "100"; $("level-out").textContent = "50";
    setZoom(1); compose();
  });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); setZoom(state.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)); });
  canvas.addEventListener("pointerdown", (e) => { state.drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointermove", (e) => {
    if (!state.drag) return;
    state.panX += e.clientX - state.drag[0]; state.panY += e.clientY - state.drag[1];
    state.drag = [e.clientX, e.clientY]; draw();
  });
  canvas.addEventListener("pointerup", () => { state.drag = null; });
  canvas.addEventListener("keydown", (e) => {
    const step = 20;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[e.key]) { state.panX += moves[e.key][0]; state.panY += moves[e.key][1]; draw(); e.preventDefault(); }
    else if (e.key === "+" || e.key === "=") { setZoom(state.zoom * 1.25); e.preventDefault(); }
    else if (e.key === "-") { setZoom(state.zoom / 1.25); e.preventDefault(); }
  });

  load();
})();
