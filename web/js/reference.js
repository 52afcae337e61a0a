// The API reference (reference.html): Swagger UI (web/vendor/swagger-ui, see web/README.md) showing the live
// OpenAPI document the API serves at /api/openapi.json. "Try it out" calls the API, as the app's session if one is
// signed in.
import { getSession, loadConfig } from "./api.js";

const config = await loadConfig();
const documentUrl = `${config.apiBaseUrl}/api/openapi.json`;
const link = document.querySelector(".document-link");
link.href = documentUrl;
link.hidden = false;

const ui = window.SwaggerUIBundle({
  url: documentUrl,
  dom_id: "#reference",
  deepLinking: true,
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
const session = getSession();
if (session) ui.preauthorizeApiKey("session", session.token);
