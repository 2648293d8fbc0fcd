/* /docs: Swagger UI on the backend's OpenAPI document, from the backend's own copy of its
   files (served at /docs/assets), so the page works offline and under the strict CSP. */
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
