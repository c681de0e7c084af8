/** Throw-away PKI folders for tests: a CA and identities in a temp folder, removed by cleanup(). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initCa } from './ca';
import { issueIdentity, type IssueOptions } from './issue';
import { loadTlsFiles, type LoadTlsOptions, type TlsFiles } from './tls-files';

/** A temp PKI folder. */
export interface PkiFixture {
  dir: string;
  /** Issues an identity and loads its TLS files (CA of this folder). */
  identity(opts: IssueOptions, load?: LoadTlsOptions): Promise<TlsFiles>;
  cleanup(): void;
}

/** Creates a temp folder with a fresh CA. */
export async function pkiFixture(prefix = 'drover-pki-'): Promise<PkiFixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  await initCa(dir);
  return {
    dir,
    async identity(opts, load) {
      const id = await issueIdentity(dir, opts);
      return loadTlsFiles({ ca: path.join(dir, 'ca.crt'), cert: id.certPath, key: id.keyPath }, load);
    },
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
