// Keep the reader's section when switching language. Each link of the language switcher
// carries data-anchors, a map from this page's heading anchors to the other language's
// (written at build time by hooks/site.py; the two pages have the same outline).
(function () {
  document.addEventListener("click", function (event) {
    var link = event.target instanceof Element && event.target.closest("a.md-select__link[hreflang]");
    if (!link || !location.hash) return;
    var anchors;
    try {
      anchors = JSON.parse(link.getAttribute("data-anchors") || "{}");
    } catch (e) {
      return;
    }
    var id = decodeURIComponent(location.hash.slice(1));
    var target = Object.prototype.hasOwnProperty.call(anchors, id) ? anchors[id] : null;
    var url = new URL(link.getAttribute("href"), location.href);
    url.hash = target ? "#" + encodeURIComponent(target) : "";
    link.setAttribute("href", url.href);
  }, true);
})();
