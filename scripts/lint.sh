#!/usr/bin/env bash
# `npm run lint`: ESLint (eslint.config.mjs) and the import rules (.dependency-cruiser.cjs) over
# the sources; both always run, then one summary line. Exit status 1 when either found a problem.
set -uo pipefail
cd "$(dirname "$0")/.."
SOURCES=(lib proto storage hypervisor migration cluster services bench cli test)

echo "lint: eslint (typescript-eslint recommended, size and any limits)"
eslint --cache --cache-location .eslintcache -f ./scripts/lint-format.cjs .
eslint_rc=$?

echo "lint: dependency-cruiser (layers, cycles, node-agent client boundary)"
depcruise --config .dependency-cruiser.cjs --output-type err "${SOURCES[@]}"
deps_rc=$?

verdict() { [ "$1" = 0 ] && echo ok || echo FAILED; }
echo "lint: eslint $(verdict $eslint_rc), dependency rules $(verdict $deps_rc)"
[ $eslint_rc = 0 ] && [ $deps_rc = 0 ]
