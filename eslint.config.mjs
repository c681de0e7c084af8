// ESLint 9 flat config: typescript-eslint's recommended rules (syntax only, no type information,
// so the whole tree lints in well under a minute) plus Drover's size and `any` limits. The layer
// rules (who may import whom) are dependency-cruiser's: .dependency-cruiser.cjs.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const SOURCES = ['lib', 'proto', 'storage', 'hypervisor', 'migration', 'cluster', 'services', 'bench', 'cli', 'scripts', 'test'];
const TESTS = ['**/*.test.ts', 'test/**/*.ts'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'guest/**', 'deploy/**', 'proto/generated/**', 'bin/**'] },
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  {
    files: SOURCES.map((d) => `${d}/**/*.ts`),
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    rules: {
      // TypeScript checks names itself (and knows the Node globals): no-undef only misfires on types.
      'no-undef': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      // A justified exception: `// eslint-disable-next-line @typescript-eslint/no-explicit-any -- reason`.
      '@typescript-eslint/no-explicit-any': 'error',
      'max-lines': ['error', { max: 600, skipBlankLines: true, skipComments: true }],
      'max-lines-per-function': ['error', { max: 120, skipBlankLines: true, skipComments: true, IIFEs: true }],
    },
  },
  {
    // Tests: the callbacks of test()/describe() are long by nature (one scenario each), so the
    // function limit does not apply; test doubles may use `any` where a partial fake is the point.
    files: TESTS,
    rules: {
      'max-lines-per-function': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
);
