// Typesets the equations of the site with the KaTeX shipped beside this file (docs/vendor_katex.sh).
// pymdownx.arithmatex (generic: true) turns $...$ into <span class="arithmatex">\(...\)</span> and $$...$$
// into <div class="arithmatex">\[...\]</div>; only those elements are typeset, so a \( in code stays as is.
// A formula KaTeX cannot parse keeps its source and is reported on the console (the browser test fails on it).
(function () {
  "use strict";
  var DELIMITERS = [["\\(", "\\)", false], ["\\[", "\\]", true]];

  function typeset(root) {
    root.querySelectorAll(".arithmatex").forEach(function (element) {
      var source = element.textContent.trim();
      var match = DELIMITERS.find(function (d) {
        return source.startsWith(d[0]) && source.endsWith(d[1]);
      });
      if (!match) {
        return;
      }
      var tex = source.slice(match[0].length, source.length - match[1].length);
      try {
        katex.render(tex, element, { displayMode: match[2], throwOnError: true });
      } catch (error) {
        console.error("KaTeX could not typeset " + source + ": " + error.message);
      }
    });
  }

  // mkdocs-material announces each page on document$ (instant navigation included)
  if (typeof document$ !== "undefined") {
    document$.subscribe(function (page) {
      typeset(page.body);
    });
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      typeset(document.body);
    });
  }
})();
