// Lint is typed (projectService) so that floating promises are caught: an
// unawaited KV write is a lost mutation.
import { readdirSync } from "node:fs";
import tseslint from "typescript-eslint";
import importX, { createNodeResolver } from "eslint-plugin-import-x";

// The layers (docs/architecture.md "Layers"): contracts import nothing of
// ours; libs import contracts and libs, never a service, a test or a tool;
// a service imports contracts and libs, never another service (its tests
// included: a test that needs two services lives under test/). test/,
// bench/ and deploy/ may use everything, through package entry points.
// Each directory under services/ is one service.
const SERVICES = readdirSync(new URL("./services/", import.meta.url), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);
const TOOLS = ["./test", "./bench", "./deploy"];
export const layerZones = [
  { target: "./contracts", from: ["./libs", "./services", ...TOOLS], message: "contracts import nothing of the bus: they are what every layer agrees on." },
  { target: "./libs", from: ["./services", ...TOOLS], message: "a lib never imports a service or a test; share through contracts/ or a lib." },
  { target: "./services", from: TOOLS, message: "a service never imports a test or a tool." },
  ...SERVICES.map((name) => ({
    target: `./services/${name}`,
    from: "./services",
    except: [`./${name}`],
    message: "a service never imports another service (tests included); cross-service tests live under test/.",
  })),
];

export default tseslint.config(
  { ignores: ["**/node_modules/**", ".tools/**", ".unibus/**", "**/*.js", "**/*.mjs", "contracts/src/generated/**"] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "import-x": importX },
    // Resolves `.js` specifiers to the `.ts` sources and workspace packages to
    // their real paths, so a zone sees where an import really lands.
    settings: { "import-x/resolver-next": [createNodeResolver({ extensions: [".ts", ".js", ".mjs", ".json"], extensionAlias: { ".js": [".ts", ".js"] } })] },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "separate-type-imports" }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/restrict-template-expressions": "off",
      "import-x/no-cycle": ["error", { ignoreExternal: true }],
      "import-x/no-restricted-paths": ["error", { zones: layerZones }],
      // Another package is reached by its name (its entry points), never by a path into its files.
      "import-x/no-relative-packages": "error",
    },
  },
);
