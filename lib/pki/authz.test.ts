/**
 * The authorization table against the contract: every method of every service in the .proto
 * files plus the health service must have an entry, and the entry must give each role exactly
 * what issue #11 specifies. A new RPC without a table entry fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { service as healthService } from 'grpc-health-check';
import { AUTHZ_TABLE, authorize, checkSource, methodsFor } from './authz';
import { ROLES, type Role } from './identity';

const PROTO_DIR = path.resolve(__dirname, '..', '..', '..', 'proto');

function contractMethods(): string[] {
  const root = new protobuf.Root();
  root.resolvePath = (_o, target) => path.join(PROTO_DIR, target);
  const files = fs.readdirSync(path.join(PROTO_DIR, 'drover', 'v1')).filter((f) => f.endsWith('.proto')).map((f) => `drover/v1/${f}`);
  root.loadSync(files);
  const out: string[] = [];
  const walk = (ns: protobuf.NamespaceBase) => {
    for (const o of ns.nestedArray) {
      if (o instanceof protobuf.Service) for (const m of o.methodsArray) out.push(`${o.fullName.slice(1)}/${m.name}`);
      else if (o instanceof protobuf.Namespace) walk(o);
    }
  };
  walk(root);
  const health = Object.values(healthService as unknown as Record<string, { path: string }>).map((d) => d.path.slice(1));
  return [...out, ...health].sort();
}

/** Issue #11, restated: what each role may call. */
function specAllows(role: Role, method: string): boolean {
  const [service, name] = method.split('/');
  if (service === 'grpc.health.v1.Health') return true;
  if (service === 'drover.v1.MigrationReceiver') return role === 'node';
  if (service !== 'drover.v1.NodeAgent') return false;
  if (role === 'admin') return true;
  if (role === 'controller') return true;
  if (role === 'monitor') return ['ListVms', 'GetVm', 'GetNodeInfo', 'AnalyzeVm'].includes(name);
  return false;
}

test('the table covers exactly the methods of the contract', () => {
  const methods = contractMethods();
  assert.ok(methods.includes('drover.v1.NodeAgent/MigrateVm') && methods.includes('grpc.health.v1.Health/Watch'), methods.join(' '));
  assert.deepEqual(Object.keys(AUTHZ_TABLE).sort(), methods, 'every RPC needs a row in lib/pki/authz.ts (and no row without an RPC)');
});

test('every method x every role: allowed per issue #11, refusals name the role and the method', () => {
  for (const method of contractMethods()) {
    for (const role of ROLES) {
      const r = authorize(`/${method}`, { role, name: 'x1' });
      if (specAllows(role, method)) {
        assert.deepEqual(r, { ok: true }, `${role} -> ${method}`);
      } else {
        assert.equal(r.ok, false, `${role} -> ${method} must be refused`);
        if (!r.ok) {
          assert.equal(r.code, 'PERMISSION_DENIED');
          assert.ok(r.message.startsWith(`role ${role} may not call ${method}`), r.message);
        }
      }
    }
  }
});

test('no identity is UNAUTHENTICATED; unknown methods are denied to every role', () => {
  const r = authorize('drover.v1.NodeAgent/ListVms', undefined);
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.code, 'UNAUTHENTICATED');
  for (const role of ROLES) {
    for (const m of ['drover.v1.NodeAgent/Shutdown', 'grpc.reflection.v1.ServerReflection/ServerReflectionInfo', 'constructor', '__proto__']) {
      const d = authorize(m, { role, name: 'a' });
      assert.equal(!d.ok && d.code, 'PERMISSION_DENIED', `${role} ${m}`);
      assert.match(!d.ok ? d.message : '', /is not in the authorization table/);
    }
  }
  assert.deepEqual(authorize('drover.v1.NodeAgent/DestroyVm', { role: 'monitor', name: 'g' }), {
    ok: false, code: 'PERMISSION_DENIED', message: 'role monitor may not call drover.v1.NodeAgent/DestroyVm (caller monitor/g; allowed: admin, controller)',
  });
});

test('data-plane calls are bound to the source node the reservation names', () => {
  assert.deepEqual(checkSource('/drover.v1.MigrationReceiver/Transfer', { role: 'node', name: 'a' }, 'a', 'm1'), { ok: true });
  const r = checkSource('/drover.v1.MigrationReceiver/AbortIncoming', { role: 'node', name: 'c' }, 'a', 'm1');
  assert.deepEqual(r, { ok: false, code: 'PERMISSION_DENIED', message: 'node c may not call drover.v1.MigrationReceiver/AbortIncoming for migration m1: the source is node a' });
  assert.deepEqual(checkSource('drover.v1.NodeAgent/GetVm', { role: 'node', name: 'c' }, 'a'), { ok: true }, 'not source-bound');
  assert.deepEqual(methodsFor('node'), ['drover.v1.MigrationReceiver/PrepareIncoming', 'drover.v1.MigrationReceiver/Transfer', 'drover.v1.MigrationReceiver/AbortIncoming', 'drover.v1.MigrationReceiver/SwitchoverOutcome', 'grpc.health.v1.Health/Check', 'grpc.health.v1.Health/Watch', 'grpc.health.v1.Health/List']);
});
