/**
 * iSCSI: Debian's `tgt` (tgtd, run in the foreground on a free port) exports a LUN backed by a
 * file; the QEMU driver's guest boots with that LUN attached through QEMU's own iSCSI initiator
 * (libiscsi, block-iscsi.so) as a virtio-blk disk; a write through QEMU's block layer reaches the
 * LUN's backing file. Skipped when tgtd or QEMU is not installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as net from 'node:net';
import { freePort } from '../../lib/free-port';
import { QemuProcess } from '../../hypervisor/qemu/qemu-process';
import { ensureGuest } from '../../hypervisor/qemu/guest-image';
import { detectAccel } from '../../hypervisor/qemu/accel';

const MiB = 1024 * 1024;
const IQN = 'iqn.2026-11.dev.drover:vmdisk';

function have(bin: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }); return true; } catch { return false; }
}

/** A foreground tgtd on 127.0.0.1:port with control port index `ctl` (its own IPC socket). */
async function startTgtd(dir: string): Promise<{ port: number; ctl: number; proc: ChildProcess; log: () => string; adm: (...a: string[]) => string }> {
  const port = await freePort();
  const ctl = 100 + Math.floor(Math.random() * 1000); // tgtd accepts a small index (its abstract IPC socket name)
  let out = '';
  const proc = spawn('tgtd', ['-f', '-C', String(ctl), '--iscsi', `portal=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const adm = (...a: string[]) => execFileSync('tgtadm', ['-C', String(ctl), '--lld', 'iscsi', ...a], { encoding: 'utf8' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); r(true); });
      s.on('error', () => r(false));
    });
    if (up) break;
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`tgtd did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, ctl, proc, log: () => out, adm };
}

/** QEMU's iSCSI initiator (libiscsi, block-iscsi.so from qemu-block-extra) is listed by qemu-img. */
function qemuHasIscsi(): boolean {
  try { return /\biscsi\b/.test(execFileSync('qemu-img', ['--help'], { encoding: 'utf8' })); } catch { return false; }
}

const skip = !have('tgtd') || !have('tgtadm') ? 'tgtd/tgtadm not installed (apt-get install tgt)'
  : !have('qemu-system-x86_64') ? 'qemu-system-x86_64 not installed'
  : !qemuHasIscsi() ? "QEMU's iSCSI block driver missing (apt-get install qemu-block-extra)" : false;

test('the QEMU guest boots with a tgtd iSCSI LUN attached through QEMU\'s initiator; writes reach the LUN', { skip, timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-iscsi-'));
  const lunFile = path.join(dir, 'lun1.img');
  fs.writeFileSync(lunFile, '');
  fs.truncateSync(lunFile, 32 * MiB);
  const tgt = await startTgtd(dir);
  let qemu: QemuProcess | undefined;
  try {
    tgt.adm('--mode', 'target', '--op', 'new', '--tid', '1', '-T', IQN);
    tgt.adm('--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '-b', lunFile);
    tgt.adm('--mode', 'target', '--op', 'bind', '--tid', '1', '-I', 'ALL');
    assert.match(tgt.adm('--mode', 'target', '--op', 'show'), /Backing store path: .*lun1\.img/);

    const uri = `iscsi://127.0.0.1:${tgt.port}/${IQN}/1`;
    const kernel = await ensureGuest();
    const { accel } = await detectAccel();
    qemu = await QemuProcess.start({
      accel, memMiB: 64, vcpus: 1, kernel, append: 'profile=idle fill=1024 wss=256 rate=256 seed=1', name: 'iscsi-guest',
      extraArgs: ['-drive', `file=${uri},if=none,id=d0,format=raw,cache=none`, '-device', 'virtio-blk-pci,drive=d0'],
    });
    await qemu.qmp.execute('cont');
    const deadline = Date.now() + 30_000;
    while (qemu.console.beats < 20) {
      assert.ok(Date.now() < deadline, `guest did not heartbeat: ${qemu.stderrText()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const blocks = await qemu.qmp.execute<Array<{ device: string; inserted?: unknown }>>('query-block');
    const d0 = blocks.find((b) => b.device === 'd0');
    assert.ok(d0?.inserted, `drive d0 attached: ${JSON.stringify(blocks)}`);
    assert.match(JSON.stringify(d0.inserted), /iscsi/);
    assert.match(JSON.stringify(d0.inserted), new RegExp(`127\\.0\\.0\\.1:${tgt.port}`));

    // A write through QEMU's block layer (HMP qemu-io on the guest's drive), flushed, lands in the LUN file.
    const hmp = (cmd: string) => qemu!.qmp.execute<string>('human-monitor-command', { 'command-line': cmd });
    // (HMP qemu-io prints its report on QEMU's stdout, not in the reply: the file is the proof.)
    await hmp('qemu-io d0 "write -P 0x5a 1048576 65536"');
    await hmp('qemu-io d0 "flush"');
    const fd = fs.openSync(lunFile, 'r');
    const got = Buffer.alloc(65536);
    fs.readSync(fd, got, 0, got.length, 1048576);
    fs.closeSync(fd);
    assert.ok(got.every((b) => b === 0x5a), 'the LUN backing file holds what the guest drive wrote');
    assert.match(tgt.adm('--mode', 'target', '--op', 'show'), /I_T nexus: \d+/, 'QEMU is logged in to the target');
    assert.ok(qemu.console.beats >= 20, 'guest keeps running');
  } finally {
    await qemu?.kill().catch(() => undefined);
    // tgtd -f ignores SIGTERM (seen here: it outlived `timeout`), so it is killed outright.
    const gone = new Promise((r) => { if (tgt.proc.exitCode !== null || tgt.proc.signalCode !== null) r(0); else tgt.proc.once('exit', r); });
    tgt.proc.kill('SIGKILL');
    await gone;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
