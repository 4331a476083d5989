// facepipe live camera: frames of the browser's camera (getUserMedia) go as JPEG over a
// WebSocket to the web service, which passes them to Recognizer/RecognizeStream; each
// result comes back as JSON and its boxes and names are drawn over the video.
// One frame is in flight at a time, so a slow link or server never builds a backlog.
"use strict";

(function () {
  const form = document.getElementById("camera-form");
  if (!form) return;
  const video = document.getElementById("camera-video");
  const overlay = document.getElementById("camera-overlay");
  const canvas = document.getElementById("camera-canvas");
  const status = document.getElementById("camera-status");
  const seen = document.getElementById("camera-seen");
  const startButton = document.getElementById("camera-start");
  const stopButton = document.getElementById("camera-stop");
  const cameraInput = document.getElementById("camera-id");
  const MAX_WIDTH = 640;
  const RESULT_WAIT_MS = 1500;

  let stream = null;
  let socket = null;
  let running = false;
  let waiting = null; // resolves when the result of the frame in flight arrives

  function say(text) {
    status.textContent = text;
  }

  function drawResult(result) {
    overlay.replaceChildren();
    const scale = video.clientWidth / (result.width || video.videoWidth || 1);
    const names = [];
    for (const face of result.faces) {
      const [x1, y1, x2, y2] = face.box;
      const box = document.createElement("div");
      box.className = face.name ? "box known" : "box";
      box.style.left = `${x1 * scale}px`;
      box.style.top = `${y1 * scale}px`;
      box.style.width = `${(x2 - x1) * scale}px`;
      box.style.height = `${(y2 - y1) * scale}px`;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = face.name ? `${face.name} ${Math.round(face.similarity * 100)}%` : "unknown";
      box.appendChild(label);
      overlay.appendChild(box);
      names.push(face.name || "unknown");
    }
    const text = names.join("|");
    if (seen.dataset.names !== text) {
      seen.dataset.names = text;
      seen.replaceChildren(
        ...names.map((name) => {
          const item = document.createElement("li");
          item.textContent = name;
          return item;
        }),
      );
    }
    say(`Running: ${result.latency_ms} ms per frame, ${result.processed} processed, ${result.dropped} dropped.`);
  }

  function frameBlob() {
    const width = Math.min(MAX_WIDTH, video.videoWidth);
    const height = Math.round((video.videoHeight * width) / video.videoWidth);
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").drawImage(video, 0, 0, width, height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  }

  async function pump() {
    while (running && socket && socket.readyState === WebSocket.OPEN) {
      if (!video.videoWidth) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      const blob = await frameBlob();
      if (!blob || !running) continue;
      const answered = new Promise((resolve) => {
        waiting = resolve;
        setTimeout(resolve, RESULT_WAIT_MS);
      });
      socket.send(blob);
      await answered;
    }
  }

  function stop(message) {
    running = false;
    if (socket) {
      socket.onclose = null;
      socket.close();
      socket = null;
    }
    if (stream) {
      stream.getTracks().forEach((track) => track.stop());
      stream = null;
    }
    video.srcObject = null;
    overlay.replaceChildren();
    startButton.disabled = false;
    stopButton.disabled = true;
    say(message || "Stopped.");
  }

  async function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say("This browser gives no camera here (a camera needs https or localhost).");
      return;
    }
    startButton.disabled = true;
    say("Asking for the camera…");
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (error) {
      stop(`No camera: ${error.message || error.name}.`);
      return;
    }
    video.srcObject = stream;
    try {
      await video.play();
    } catch (error) {
      // Autoplay of a muted video is allowed; a refusal still leaves frames to read.
    }
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${window.location.host}/ui/camera/ws`);
    socket.onopen = () => {
      socket.send(JSON.stringify({ csrf: form.dataset.csrf, camera_id: cameraInput.value }));
      running = true;
      stopButton.disabled = false;
      say("Running.");
      pump().catch((error) => stop(`Stopped: ${error.message || error}.`));
    };
    socket.onmessage = (event) => {
      let result;
      try {
        result = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (result.fatal) {
        stop(`Stopped: ${result.fatal}`);
        return;
      }
      drawResult(result);
      if (waiting) {
        const resolve = waiting;
        waiting = null;
        resolve();
      }
    };
    socket.onclose = () => stop("The connection closed.");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    start();
  });
  stopButton.addEventListener("click", () => stop());
  window.addEventListener("pagehide", () => stop());
})();
