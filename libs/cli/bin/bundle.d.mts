/** Bundles `entry` to `outFile` (plain JavaScript) unless an up-to-date bundle is there. */
export declare function bundleScript(opts: { entry: string; outFile: string; root: string }): Promise<{ path: string; built: boolean; ms: number }>;
