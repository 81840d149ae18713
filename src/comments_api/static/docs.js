// Starts Swagger UI on /docs. A file of its own because the page's CSP runs scripts from
// this origin only, never inline ones.
"use strict";

(() => {
  const root = document.getElementById("swagger-ui");
  // Problem links (/docs#problem-<slug>) point below the reference, which renders after
  // the browser has scrolled: scroll again once it is in place.
  const toProblem = () => {
    if (!location.hash.startsWith("#problem")) return;
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) target.scrollIntoView();
  };
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: false,
    displayOperationId: false,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    // Never send our document to a third-party validator (the default is a public one).
    validatorUrl: null,
    onComplete: toProblem,
  });
  window.addEventListener("hashchange", toProblem);
})();
