// Fills the gallery after load and reveals the last image only when scrolled into view.
window.addEventListener("load", () => {
  setTimeout(() => {
    const gallery = document.getElementById("gallery");
    for (const name of ["js-1.jpg", "js-2.jpg"]) {
      const img = document.createElement("img");
      img.src = "/img/" + name;
      img.alt = "Script " + name;
      gallery.appendChild(img);
    }
  }, 200);
  const later = document.getElementById("later");
  new IntersectionObserver((entries, observer) => {
    if (entries.some((e) => e.isIntersecting)) {
      later.src = later.dataset.later;
      observer.disconnect();
    }
  }).observe(later);
  // Requested by script, never put in the DOM.
  const preload = new Image();
  preload.src = "/img/js-preload.jpg";
});
