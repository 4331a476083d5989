// facepipe web UI: progressive enhancement only; every page works without this file.
"use strict";

// Drag and drop onto a .drop zone fills its file input and shows a preview.
function setUpDropZones() {
  document.querySelectorAll(".drop").forEach((zone) => {
    const input = zone.querySelector("input[type=file]");
    const preview = zone.querySelector(".preview");
    const show = () => {
      if (!preview || !input.files || !input.files[0]) return;
      preview.src = URL.createObjectURL(input.files[0]);
      preview.alt = "chosen photo";
      preview.hidden = false;
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach((name) =>
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      }),
    );
    ["dragleave", "drop"].forEach((name) =>
      zone.addEventListener(name, () => zone.classList.remove("over")),
    );
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show();
      }
    });
  });
}

// A page marked data-refresh reloads itself every few seconds (crawl progress) while
// nobody is typing in it.
function setUpRefresh() {
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  setInterval(() => {
    const active = document.activeElement;
    if (active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName)) return;
    window.location.reload();
  }, seconds * 1000);
}

// Forms with data-confirm ask before doing something that cannot be undone.
function setUpConfirm() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDropZones();
  setUpRefresh();
  setUpConfirm();
});
