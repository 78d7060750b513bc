// ESLint (flat config): typescript-eslint's recommended rules, imports sorted,
// type-only imports marked, and the formatter: @effect/eslint-plugin's `dprint`
// rule runs dprint's TypeScript plugin (as the Effect repository does), so
// `eslint` is the format check and `eslint --fix` the formatter.
import effect from "@effect/eslint-plugin"
import simpleImportSort from "eslint-plugin-simple-import-sort"
import tseslint from "typescript-eslint"

export default tseslint.config(
  {
    ignores: ["dist/**", "node_modules/**", "test/consumer/app/**", "bench/results/**", "docs/.vitepress/**"]
  },
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts", "**/*.mjs"],
    plugins: { "@effect": effect, "simple-import-sort": simpleImportSort },
    rules: {
      "@effect/dprint": ["error", {
        config: {
          indentWidth: 2,
          lineWidth: 120,
          semiColons: "asi",
          quoteStyle: "alwaysDouble",
          trailingCommas: "never",
          operatorPosition: "maintain",
          "arrowFunction.useParentheses": "force",
          // simple-import-sort owns the order of imports; two sorters disagree.
          "module.sortImportDeclarations": "maintain",
          "module.sortExportDeclarations": "maintain"
        }
      }],
      // One group, sorted by module name: the order most files already use.
      "simple-import-sort/imports": ["error", { groups: [["^\\u0000", "^[^.]", "^\\."]] }],
      "simple-import-sort/exports": "off",
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // Effect's generators (`Effect.gen(function*() { ... })`) need not yield.
      "require-yield": "off",
      // A `let` assigned once after a closure that reads it is not a const.
      "prefer-const": ["error", { ignoreReadBeforeAssign: true }],
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/no-empty-object-type": "off"
    }
  }
)
