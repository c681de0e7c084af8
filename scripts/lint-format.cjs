/**
 * ESLint formatter for `npm run lint`: one `file:line:col: message [rule]` line per problem
 * (grep- and editor-friendly, like the old unix formatter), then a summary per rule.
 */
const path = require('node:path');

module.exports = function format(results) {
  const lines = [];
  const perRule = new Map();
  let errors = 0;
  let warnings = 0;
  for (const r of results) {
    const file = path.relative(process.cwd(), r.filePath);
    for (const m of r.messages) {
      const rule = m.ruleId ?? (m.fatal ? 'parse-error' : 'eslint');
      lines.push(`${file}:${m.line ?? 0}:${m.column ?? 0}: ${m.message} [${m.severity === 2 ? 'error' : 'warning'}/${rule}]`);
      perRule.set(rule, (perRule.get(rule) ?? 0) + 1);
      if (m.severity === 2) errors++;
      else warnings++;
    }
  }
  const files = results.length;
  if (errors + warnings === 0) return `eslint: ${files} files, no problems\n`;
  const summary = [...perRule].sort((a, b) => b[1] - a[1]).map(([rule, n]) => `  ${String(n).padStart(5)}  ${rule}`);
  return `${lines.join('\n')}\n\neslint: ${errors} errors, ${warnings} warnings in ${files} files; by rule:\n${summary.join('\n')}\n`;
};
