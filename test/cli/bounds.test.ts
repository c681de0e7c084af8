/**
 * The CLI's input bounds: out-of-range sizes, durations and counts and a flag given twice exit 2
 * with one line naming the flag, before anything is contacted (the agent address is unused).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { usageErrorLine } from '../support/cli';

/** Nothing listens here: a command that got past parsing would fail differently (not exit 2). */
const NOWHERE = '127.0.0.1:1';

test('out-of-bounds, repeated and dash-led values exit 2 with one line naming the flag', () => {
  const cases: Array<[string[], RegExp]> = [
    [['migrate', 'x', '--from', NOWHERE, '--to', NOWHERE, '--max-downtime', `${'9'.repeat(400)}ms`], /--max-downtime .* is not a finite duration/],
    [['migrate', 'x', '--from', NOWHERE, '--to', NOWHERE, '--max-downtime', '61s'], /--max-downtime "61s" is too large \(at most 60s\)/],
    [['migrate', 'x', '--from', NOWHERE, '--to', NOWHERE, '--bandwidth', `${'9'.repeat(400)}Gbit`], /--bandwidth .* is not a finite rate/],
    [['vm', 'create', 'x', '--agent', NOWHERE, '--mem', '1GiB', '--mem', '2GiB', '--profile', 'web'], /--mem is given more than once/],
    [['vm', 'create', 'x', '--agent', NOWHERE, '--mem', '65GiB', '--profile', 'web'], /--mem "65GiB" is too large \(at most 64GiB\)/],
    [['vm', 'create', 'x', '--agent', NOWHERE, '--mem', '1GiB', '--vcpus', '0', '--profile', 'web'], /--vcpus "0" is too small \(at least 1\)/],
    [['vm', 'create', 'x', '--agent', NOWHERE, '--mem', '1GiB', '--vcpus', '99999999999999999999', '--profile', 'web'], /--vcpus .* is too large/],
    // a value that begins with a dash, after a flag that takes one
    [['analyze', 'x', '--agent', NOWHERE, '--bandwidth', '-1Gbit'], /^drover: analyze: --bandwidth needs a value and "-1Gbit" begins with a dash/],
    [['analyze', 'x', '--agent', NOWHERE, '--bandwidth=-1Gbit'], /--bandwidth "-1Gbit" is not a number with a unit/],
    [['migrate', 'x', '--from', NOWHERE, '--to', NOWHERE, '--max-downtime', '-5ms'], /migrate: --max-downtime needs a value and "-5ms" begins with a dash/],
    [['vm', 'create', 'x', '--agent', NOWHERE, '--mem', '--profile', 'web'], /vm create: --mem needs a value \(got the flag --profile\)/],
    [['migrate', 'x', '--from', NOWHERE, '--to', NOWHERE, '--compress', 'zstd'], /--compress "zstd" is not a compression mode \(expected never, auto, always\)/],
  ];
  for (const [args, want] of cases) {
    assert.match(usageErrorLine(...args, '--insecure'), want);
  }
});
