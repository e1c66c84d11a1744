// The imageproto live viewer: polls /api/streams once a second, keeps one
// card per stream with its MJPEG picture, statistics, detection boxes and
// the newest frame's metadata.
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

(function () {
  var POLL_MS = 1000;
  var cards = {};

  var FIELDS = [
    ["fps", "fps", function (s) { return fixed(s.fps, 1); }],
    ["latency", "latency as measured p50 / p95 / p99 (ms)", function (s) {
      var l = s.latency_ms || {};
      return [l.p50, l.p95, l.p99].map(function (v) { return fixed(v, 1); }).join(" / ");
    }],
    ["corrected", "corrected latency p50 / p95 / p99 (ms)", function (s) {
      var l = s.latency_corrected_ms || {};
      return [l.p50, l.p95, l.p99].map(function (v) { return fixed(v, 1); }).join(" / ");
    }],
    ["clock", "sender clock offset (ms)", function (s) {
      if (s.clock_offset_ms === null || s.clock_offset_ms === undefined) { return "–"; }
      return fixed(s.clock_offset_ms, 1) + " ± " + fixed(s.clock_error_ms, 2);
    }],
    ["frames", "frames", function (s) { return count(s.frames); }],
    ["seq", "latest seq", function (s) { return count(s.seq); }],
    ["bytes", "bytes", function (s) { return bytes(s.bytes); }],
    ["dropped", "dropped by sender", function (s) { return count(s.dropped); }],
    ["gaps", "gaps", function (s) { return count(s.gaps); }],
    ["reconnects", "reconnects", function (s) { return count(s.reconnects); }],
    ["viewers", "viewers", function (s) { return count(s.viewers); }],
    ["recording", "recorded / dropped", function (s) {
      return s.recording ? count(s.recording.written) + " / " + count(s.recording.dropped) : "off";
    }],
    ["lastSeen", "last seen", function (s) { return ago(s.last_seen); }]
  ];

  function fixed(v, digits) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(digits); }
  function count(v) { return (v === null || v === undefined) ? "–" : String(v); }
  function bytes(v) {
    if (v === null || v === undefined) { return "–"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + units[i];
  }
  var serverOffset = 0;
  function ago(t) {
    if (!t) { return "–"; }
    var s = Date.now() / 1000 + serverOffset - t;
    return s < 2 ? "now" : Math.round(s) + " s ago";
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function streamURL(name, suffix) {
    return "/streams/" + encodeURIComponent(name) + suffix;
  }

  function makeCard(name) {
    var card = el("section", "stream");
    card.dataset.stream = name;
    var title = el("h2");
    title.appendChild(el("span", "name", name));
    var badge = el("span", "badge", "live");
    title.appendChild(badge);
    card.appendChild(title);

    var picture = el("div", "picture");
    var img = el("img");
    img.alt = "live picture of " + name;
    var canvas = el("canvas");
    picture.appendChild(img);
    picture.appendChild(canvas);
    card.appendChild(picture);

    var table = el("table", "stats");
    var cells = {};
    FIELDS.forEach(function (f) {
      var row = el("tr");
      row.appendChild(el("th", null, f[1]));
      var td = el("td", "stat-" + f[0]);
      row.appendChild(td);
      table.appendChild(row);
      cells[f[0]] = td;
    });
    card.appendChild(table);

    // The newest frame's metadata (the sender's JSON), as text: never HTML.
    var metadata = el("pre", "metadata");
    metadata.hidden = true;
    card.appendChild(metadata);

    var c = { card: card, img: img, canvas: canvas, badge: badge, cells: cells,
              metadata: metadata, detections: null, name: name, live: true };
    img.addEventListener("load", function () { drawBoxes(c); });
    img.addEventListener("error", function () {
      // The server went away or restarted: try again shortly (the stream,
      // or the last picture of a disconnected one).
      setTimeout(function () { connectPicture(c); }, 2000);
    });
    connectPicture(c);
    return c;
  }

  // A live stream shows its MJPEG; a disconnected one its last frame as a
  // still image, so the picture stays (the browser may blank an MJPEG
  // response that ends or stalls) and is marked disconnected by the CSS.
  function connectPicture(c) {
    c.img.src = c.live
      ? streamURL(c.name, ".mjpg") + "?t=" + Date.now()
      : streamURL(c.name, "/latest.jpg") + "?t=" + Date.now();
  }

  function drawBoxes(c) {
    var img = c.img, canvas = c.canvas;
    var w = img.clientWidth, h = img.clientHeight;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    var d = c.detections;
    if (!d || !img.naturalWidth) { return; }
    var boxes = Array.isArray(d) ? d : (d.detections || []);
    var sx = w / (d.width || img.naturalWidth), sy = h / (d.height || img.naturalHeight);
    ctx.lineWidth = 2;
    ctx.font = "12px sans-serif";
    boxes.forEach(function (b) {
      if (!b || !b.box || b.box.length !== 4) { return; }
      var x = b.box[0] * sx, y = b.box[1] * sy, bw = b.box[2] * sx, bh = b.box[3] * sy;
      ctx.strokeStyle = "#00e676";
      ctx.strokeRect(x, y, bw, bh);
      var label = (b.label || "") + (b.confidence !== undefined ? " " + Math.round(b.confidence * 100) + "%" : "");
      if (label) {
        var tw = ctx.measureText(label).width + 6;
        ctx.fillStyle = "#00e676";
        ctx.fillRect(x, Math.max(0, y - 16), tw, 16);
        ctx.fillStyle = "#000";
        ctx.fillText(label, x + 3, Math.max(12, y - 4));
      }
    });
  }

  function update(data) {
    var streams = data.streams || {};
    if (data.time) { serverOffset = data.time - Date.now() / 1000; }
    var names = Object.keys(streams).sort();
    var container = document.getElementById("streams");
    document.getElementById("empty").style.display = names.length ? "none" : "";
    names.forEach(function (name) {
      var s = streams[name];
      var c = cards[name];
      if (!c) {
        c = cards[name] = makeCard(name);
        container.appendChild(c.card);
      }
      var live = !!s.connected;
      c.card.classList.toggle("offline", !live);
      c.badge.textContent = live ? "live" : "disconnected";
      if (live !== c.live) {
        c.live = live;
        // Keep a picture only once the stream has sent one.
        if (live || s.seq !== null) { connectPicture(c); }
      }
      FIELDS.forEach(function (f) { c.cells[f[0]].textContent = f[2](s); });
      var hasMetadata = s.metadata !== undefined && s.metadata !== null;
      c.metadata.hidden = !hasMetadata;
      c.metadata.textContent = hasMetadata ? JSON.stringify(s.metadata, null, 1) : "";
      c.detections = s.detections || null;
      drawBoxes(c);
    });
  }

  function poll() {
    var status = document.getElementById("status");
    fetch("/api/streams", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) {
        update(data);
        status.textContent = "updated " + new Date().toLocaleTimeString();
        status.classList.remove("error");
      })
      .catch(function (e) {
        status.textContent = "receiver unreachable (" + e.message + ")";
        status.classList.add("error");
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  poll();
}());
