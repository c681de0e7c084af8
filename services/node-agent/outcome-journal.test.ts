import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { JOURNAL_KEEP_MS, OutcomeJournal } from './outcome-journal';
import { usageErrorLine } from '../../test/support/cli';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'journal-'));

test('a later process answers from what an earlier one of the same boot recorded', () => {
  const dir = tmp();
  const old = new OutcomeJournal(dir, 'boot-1');
  old.started('m-started', 'tok-a', false);
  old.started('m-resuming', 'tok-b', false);
  old.step('m-resuming', 'resuming');
  old.started('m-owned', 'tok-c', false);
  old.step('m-owned', 'resuming');
  old.step('m-owned', 'owned');
  old.started('m-gaveup', 'tok-d', false);
  old.step('m-gaveup', 'resuming');
  old.step('m-gaveup', 'not_owned');
  old.started('m-tunnel', 'tok-e', true);
  old.close();
  const now = new OutcomeJournal(dir, 'boot-1');
  assert.equal(now.answer('m-started', 'tok-a'), 'not_owned', 'never resumed the guest');
  assert.equal(now.answer('m-resuming', 'tok-b'), 'lost', 'the guest may have run and died with the process');
  assert.equal(now.answer('m-owned', 'tok-c'), 'lost', 'owned by a process that is gone');
  assert.equal(now.answer('m-gaveup', 'tok-d'), 'not_owned');
  assert.equal(now.answer('m-tunnel', 'tok-e'), undefined, 'a tunnel guest may run before Complete: no answer');
  assert.equal(now.answer('m-never', 'tok-x'), undefined);
  assert.equal(now.answer('m-started', 'wrong'), 'mismatch');
  now.close();
  const files = fs.readdirSync(dir);
  assert.equal(files.length, 2, `one file per process: ${files.join(', ')}`);
  for (const f of files) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o077, 0, `${f} is private`);
  assert.ok(!fs.readFileSync(path.join(dir, files[0]), 'utf8').includes('tok-a'), 'only the token hash is kept');
});

test('records of another boot, and steps of a migration this process did not start, give no answer', () => {
  const dir = tmp();
  const old = new OutcomeJournal(dir, 'boot-1');
  old.started('m-1', 'tok', false);
  old.step('m-other', 'resuming'); // not started here: not written
  old.close();
  assert.equal(new OutcomeJournal(dir, 'boot-2').answer('m-1', 'tok'), undefined, 'a reboot may have lost writes');
  assert.equal(new OutcomeJournal(dir, 'boot-1').answer('m-other', 'tok'), undefined);
  assert.equal(new OutcomeJournal(dir, '').answer('m-1', 'tok'), undefined, 'no boot id: no answer');
});

test('stale files are deleted at start-up; torn lines are skipped', () => {
  const dir = tmp();
  const old = new OutcomeJournal(dir, 'boot-1', Date.now());
  old.started('m-1', 'tok', false);
  old.close();
  const [file] = fs.readdirSync(dir);
  fs.appendFileSync(path.join(dir, file), '{"id":"m-1","tokenSha256":"ab'); // a write cut short by a crash
  assert.equal(new OutcomeJournal(dir, 'boot-1').answer('m-1', 'tok'), 'not_owned', 'the torn line is skipped');
  const past = (Date.now() - JOURNAL_KEEP_MS - 60_000) / 1000;
  fs.utimesSync(path.join(dir, file), past, past);
  const later = new OutcomeJournal(dir, 'boot-1');
  assert.ok(!fs.existsSync(path.join(dir, file)), 'the stale file is gone');
  assert.equal(later.answer('m-1', 'tok'), 'not_owned', 'still read once before it was deleted');
});

test('drover agent --state-dir that is not a directory exits 2 with one line naming the flag', () => {
  const file = path.join(tmp(), 'a-file');
  fs.writeFileSync(file, 'x');
  const line = usageErrorLine('agent', '--listen', '127.0.0.1:0', '--node-id', 'sd', '--insecure', '--state-dir', file);
  assert.match(line, /^drover: --state-dir ".*a-file" is not a writable directory/);
});
