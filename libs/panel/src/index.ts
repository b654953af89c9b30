/**
 * @unibus/panel: the static admin panel (built by `npm run panel:build`) and
 * the Node request handler that serves it.
 */
export { createPanelHandler, PANEL_DIST_DIR, panelContentSecurityPolicy } from "./handler.js";
export type { PanelHandler, PanelHandlerOptions } from "./handler.js";
