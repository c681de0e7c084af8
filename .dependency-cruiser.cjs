/**
 * Drover's import rules (run by `npm run lint`). Layers, lowest first; a module may import only
 * from its own layer or a lower one:
 *
 *   lib, proto < storage < hypervisor < migration < cluster < services < bench < cli
 *
 * test/ and *.test.ts are exempt from the layer rules (they may import anything), not from the
 * cycle rule. Type-only imports count like any other (dependency-cruiser sees them with
 * tsPreCompilationDeps).
 */
const LAYERS = [
  ['lib', 'proto'],
  ['storage'],
  ['hypervisor'],
  ['migration'],
  ['cluster'],
  ['services'],
  ['bench'],
  ['cli'],
];
const TEST_FILES = '(^test/|\\.test\\.ts$)';
const dirs = (names) => `^(${names.join('|')})/`;

/** For each layer: it must not import any layer above it. */
const layerRules = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${layer.join('-')}`,
  comment: `${layer.join(', ')} may import only from ${LAYERS.slice(0, i + 1).flat().join(', ')} (layer order: ${LAYERS.map((l) => l.join(', ')).join(' < ')})`,
  severity: 'error',
  from: { path: dirs(layer), pathNot: TEST_FILES },
  to: { path: dirs(LAYERS.slice(i + 1).flat()) },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No import cycles (type-only ones included).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'migration-core-standalone',
      comment: 'The migration core imports nothing from services/, cluster/, cli/ or bench/.',
      severity: 'error',
      from: { path: '^migration/', pathNot: TEST_FILES },
      to: { path: '^(services|cluster|cli|bench)/' },
    },
    {
      name: 'node-agent-through-its-client',
      comment: 'The migrator and the scheduler reach the node agent only through its public gRPC client (services/node-agent/client/).',
      severity: 'error',
      from: { path: '^services/(migrator|scheduler)/', pathNot: TEST_FILES },
      to: { path: '^services/node-agent/', pathNot: '^services/node-agent/client/' },
    },
    {
      name: 'node-agent-not-above',
      comment: 'The node agent does not depend on the migrator or the scheduler.',
      severity: 'error',
      from: { path: '^services/node-agent/', pathNot: TEST_FILES },
      to: { path: '^services/(migrator|scheduler)/' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'Every import resolves (a typo or a missing package).',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
