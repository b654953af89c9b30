/**
 * Environment variable naming the file descriptor of the pipe a supervisor
 * holds open for as long as it lives. Unset = no supervisor to watch (compose,
 * a service started by hand).
 */
export const PARENT_LIFELINE_FD_ENV = "UNIBUS_PARENT_FD";

/**
 * `--import` specifier of the preload that ends a node child once its
 * supervisor's end of the lifeline closes (SIGTERM to itself, hard exit
 * 500 ms later). Put it before `--import tsx` so it watches from the first
 * millisecond, loading and crash-restart windows included.
 */
export const PARENT_LIFELINE_PRELOAD = new URL("./parent-lifeline.mjs", import.meta.url).href;
