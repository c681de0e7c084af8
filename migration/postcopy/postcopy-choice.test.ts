import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choosePostcopy } from './postcopy-choice';
import { resolvePolicy } from '../types';

test('post-copy only when the policy allows it and the target offers it', () => {
  assert.equal(choosePostcopy(resolvePolicy({}), 'stalled', true), false, 'absent = never (cluster migrations keep pre-copy)');
  assert.equal(choosePostcopy(resolvePolicy({ postcopy: 'never' }), 'stalled', true), false);
  assert.equal(choosePostcopy(resolvePolicy({ postcopy: 'always' }), null, true), true);
  assert.equal(choosePostcopy(resolvePolicy({ postcopy: 'always' }), null, false), false, 'the target did not offer it');
  assert.equal(choosePostcopy(resolvePolicy({ postcopy: 'auto' }), null, true), false);
  assert.equal(choosePostcopy(resolvePolicy({ postcopy: 'auto' }), 'stalled', true), true);
});
