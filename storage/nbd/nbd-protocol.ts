/**
 * Wire constants of the NBD protocol (doc/proto.md of the NetworkBlockDevice project):
 * handshake magics and flags, option and option-reply codes, info types, transmission flags,
 * command types and flags, reply magics and errno values. Values only; no behaviour.
 */

/** "NBDMAGIC": first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle handshake magic (server greeting and every client option). */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/** Oldstyle negotiation magic (not supported by this client). */
export const NBD_OLDSTYLE_MAGIC = 0x00420281861253n;
/** Magic leading every option reply. */
export const NBD_OPT_REPLY_MAGIC = 0x0003e889045565a9n;
/** Magic of a transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Magic of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Magic of a structured reply chunk (only valid after NBD_OPT_STRUCTURED_REPLY). */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flag: server supports fixed newstyle. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
/** Handshake flag: server can omit the 124 zero bytes after NBD_OPT_EXPORT_NAME. */
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flag: client speaks fixed newstyle. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
/** Client flag: server must omit the 124 zero bytes. */
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Option: enter transmission for the named export (cannot report errors). */
export const NBD_OPT_EXPORT_NAME = 1;
/** Option: end negotiation without entering transmission. */
export const NBD_OPT_ABORT = 2;
/** Option: list exports. */
export const NBD_OPT_LIST = 3;
/** Option: upgrade to TLS. */
export const NBD_OPT_STARTTLS = 5;
/** Option: query export info without entering transmission. */
export const NBD_OPT_INFO = 6;
/** Option: query export info and enter transmission. */
export const NBD_OPT_GO = 7;

/** Option reply: success / end of a reply list. */
export const NBD_REP_ACK = 1;
/** Option reply: one export in an NBD_OPT_LIST answer. */
export const NBD_REP_SERVER = 2;
/** Option reply: one NBD_INFO_* item in an NBD_OPT_INFO/GO answer. */
export const NBD_REP_INFO = 3;
/** Bit set on every option error reply. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
/** Option error: option not supported. */
export const NBD_REP_ERR_UNSUP = 0x80000001;
/** Option error: forbidden by server policy. */
export const NBD_REP_ERR_POLICY = 0x80000002;
/** Option error: syntactically or semantically invalid. */
export const NBD_REP_ERR_INVALID = 0x80000003;
/** Option error: not supported on this platform. */
export const NBD_REP_ERR_PLATFORM = 0x80000004;
/** Option error: TLS required first. */
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
/** Option error: the export does not exist. */
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
/** Option error: the server is shutting down. */
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
/** Option error: the client must request block size info. */
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
/** Option error: request too big. */
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

/** Info item: export size and transmission flags. */
export const NBD_INFO_EXPORT = 0;
/** Info item: export name. */
export const NBD_INFO_NAME = 1;
/** Info item: export description. */
export const NBD_INFO_DESCRIPTION = 2;
/** Info item: minimum, preferred and maximum block sizes. */
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flag: flags field is valid (always set). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
/** Transmission flag: export is read-only. */
export const NBD_FLAG_READ_ONLY = 1 << 1;
/** Transmission flag: server accepts NBD_CMD_FLUSH. */
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
/** Transmission flag: server accepts NBD_CMD_FLAG_FUA. */
export const NBD_FLAG_SEND_FUA = 1 << 3;
/** Transmission flag: export behaves like a rotational disk. */
export const NBD_FLAG_ROTATIONAL = 1 << 4;
/** Transmission flag: server accepts NBD_CMD_TRIM. */
export const NBD_FLAG_SEND_TRIM = 1 << 5;
/** Transmission flag: server accepts NBD_CMD_WRITE_ZEROES. */
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
/** Transmission flag: several connections to this export see consistent data. */
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

/** Command: read. */
export const NBD_CMD_READ = 0;
/** Command: write. */
export const NBD_CMD_WRITE = 1;
/** Command: disconnect (no reply). */
export const NBD_CMD_DISC = 2;
/** Command: flush the server's write cache. */
export const NBD_CMD_FLUSH = 3;
/** Command: discard (a hint). */
export const NBD_CMD_TRIM = 4;

/** Command flag: force unit access (the write is durable when the reply comes). */
export const NBD_CMD_FLAG_FUA = 1 << 0;

/** Size of a transmission request header in bytes. */
export const NBD_REQUEST_SIZE = 28;
/** Size of a simple reply header in bytes. */
export const NBD_SIMPLE_REPLY_SIZE = 16;
/** Largest payload a client may send when the server states no maximum (spec: 32 MiB). */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;

/** Human names of NBD commands, for error messages. */
export const NBD_CMD_NAMES: Record<number, string> = { 0: 'READ', 1: 'WRITE', 2: 'DISC', 3: 'FLUSH', 4: 'TRIM' };

/** NBD errno values (proto.md "Error values") with their names and meanings. */
export const NBD_ERRNO: Record<number, [string, string]> = {
  1: ['EPERM', 'operation not permitted'],
  5: ['EIO', 'input/output error on the server'],
  12: ['ENOMEM', 'server out of memory'],
  22: ['EINVAL', 'invalid argument'],
  28: ['ENOSPC', 'no space left on the server'],
  75: ['EOVERFLOW', 'value too large'],
  95: ['ENOTSUP', 'operation not supported'],
  108: ['ESHUTDOWN', 'server is shutting down'],
};

/** Human names of option reply error codes, for error messages. */
export const NBD_REP_ERR_NAMES: Record<number, string> = {
  [NBD_REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
  [NBD_REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
  [NBD_REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
  [NBD_REP_ERR_PLATFORM]: 'NBD_REP_ERR_PLATFORM',
  [NBD_REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
  [NBD_REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
  [NBD_REP_ERR_SHUTDOWN]: 'NBD_REP_ERR_SHUTDOWN',
  [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
  [NBD_REP_ERR_TOO_BIG]: 'NBD_REP_ERR_TOO_BIG',
};
