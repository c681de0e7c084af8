/**
 * Strict parsing and formatting of NBD URIs: `nbd://host[:port]/export`.
 *
 * Follows the NBD URI convention (doc/uri.md of the NetworkBlockDevice project, as used by
 * qemu and libnbd) for the plain-TCP form only: scheme `nbd`, a host (a name, an IPv4 address
 * or a bracketed IPv6 address), an optional port (default 10809, the IANA port) and the export
 * name as the percent-encoded path after the first `/` (empty = the server's default export).
 * Userinfo, query strings, fragments, TLS (`nbds`) and Unix-socket (`nbd+unix`) forms are refused
 * with an INVALID_ARGUMENT error naming the URI and what was wrong.
 */
import { invalidArgument } from '../../lib/errors';

/** The IANA-assigned NBD port, used when a URI names none. */
export const NBD_DEFAULT_PORT = 10809;

/** The parts of an `nbd://` URI. */
export interface NbdAddress {
  /** Host name or address (IPv6 without brackets). */
  host: string;
  /** TCP port, 1..65535. */
  port: number;
  /** Export name (decoded); empty means the server's default export. */
  exportName: string;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/** Parses `nbd://host[:port]/export` strictly; throws INVALID_ARGUMENT naming the URI and the fault. */
export function parseNbdUri(uri: string): NbdAddress {
  const bad = (why: string) => invalidArgument(`NBD URI "${uri}" ${why} (expected nbd://host[:port]/export)`);
  if (typeof uri !== 'string') throw invalidArgument(`NBD URI must be a string, got ${typeof uri}`);
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?([?#].*)?$/.exec(uri);
  if (!m) throw bad('is not of the form scheme://authority/path');
  const [, scheme, authority, path, rest] = m;
  if (scheme.toLowerCase() !== 'nbd') throw bad(`has scheme "${scheme}"; only "nbd" is supported`);
  if (rest !== undefined) throw bad('has a query string or fragment, which is not supported');
  if (authority.includes('@')) throw bad('has userinfo, which is not supported');
  if (authority === '') throw bad('has no host');

  let host: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) throw bad('has an unclosed IPv6 bracket');
    host = authority.slice(1, close);
    const after = authority.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw bad('has junk after the IPv6 address');
    portText = after === '' ? undefined : after.slice(1);
    if (!IPV6.test(host) || !host.includes(':')) throw bad(`has an invalid IPv6 address "${host}"`);
  } else {
    const colon = authority.indexOf(':');
    host = colon < 0 ? authority : authority.slice(0, colon);
    portText = colon < 0 ? undefined : authority.slice(colon + 1);
    if (!IPV4.test(host) && !(HOSTNAME.test(host) && !/^[0-9.]+$/.test(host))) throw bad(`has an invalid host "${host}"`);
  }

  let port = NBD_DEFAULT_PORT;
  if (portText !== undefined) {
    if (!/^[0-9]{1,5}$/.test(portText)) throw bad(`has an invalid port "${portText}"`);
    port = Number(portText);
    if (port < 1 || port > 65535) throw bad(`has port ${port} outside 1..65535`);
  }

  let exportName = '';
  if (path !== undefined && path.length > 1) {
    try {
      exportName = decodeURIComponent(path.slice(1));
    } catch (err) {
      throw invalidArgument(`NBD URI "${uri}" has a malformed percent-encoding in the export name`, err);
    }
  }
  if (Buffer.byteLength(exportName, 'utf8') > 4096) throw bad('has an export name longer than 4096 bytes');
  return { host, port, exportName };
}

/** Formats an address as `nbd://host:port/export`, percent-encoding the export name. */
export function formatNbdUri(addr: NbdAddress): string {
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  const name = addr.exportName.split('/').map(encodeURIComponent).join('/');
  return `nbd://${host}:${addr.port}/${name}`;
}
