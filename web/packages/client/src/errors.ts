/**
 * Errors of @voq/client and the application error codes of voq/1 (docs/PROTOCOL.md, "Error
 * codes"). Everything the client throws or rejects with is a {@link VoqError} with a stable
 * `code`, so an application can tell the user something useful ("allow the microphone", "the
 * server is down") without parsing messages.
 */

/**
 * The wire codes of RESET_STREAM, STOP_SENDING and connection close (docs/PROTOCOL.md), by the
 * name that is also their `error.code` string. testdata/wire/error-codes.json (`stream_codes`)
 * is the shared list; a unit test holds this one to it.
 */
export const STREAM_CODES = {
  no_error: 0x00,
  internal_error: 0x01,
  protocol_violation: 0x02,
  frame_too_large: 0x03,
  bad_stream_header: 0x04,
  cancelled: 0x05,
  stream_refused: 0x06,
  going_away: 0x07,
  agent_failed: 0x08,
  version_mismatch: 0x09,
  unauthorized: 0x0a,
  limit_exceeded: 0x0b,
} as const;
/** The name of a wire code (`cancelled`, …). */
export type StreamCodeName = keyof typeof STREAM_CODES;

/** The same wire codes under constant-style names, for code (`Code.Cancelled`). */
export const Code = {
  NoError: STREAM_CODES.no_error,
  InternalError: STREAM_CODES.internal_error,
  ProtocolViolation: STREAM_CODES.protocol_violation,
  FrameTooLarge: STREAM_CODES.frame_too_large,
  BadStreamHeader: STREAM_CODES.bad_stream_header,
  Cancelled: STREAM_CODES.cancelled,
  StreamRefused: STREAM_CODES.stream_refused,
  GoingAway: STREAM_CODES.going_away,
  AgentFailed: STREAM_CODES.agent_failed,
  VersionMismatch: STREAM_CODES.version_mismatch,
  Unauthorized: STREAM_CODES.unauthorized,
  LimitExceeded: STREAM_CODES.limit_exceeded,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const CODE_NAMES = new Map<number, StreamCodeName>(Object.entries(STREAM_CODES).map(([name, code]) => [code, name as StreamCodeName]));

/** The `error.code` string of a wire code (`cancelled` for 5), or `code_N` for unknown ones. */
export function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `code_${code}`;
}

/**
 * Every `error.code` a voq/1 server's `error` event may carry (docs/PROTOCOL.md): the wire
 * codes that are also event codes, and the codes of rejected client events.
 * testdata/wire/error-codes.json (`event_codes`) is the shared list; a unit test holds this one
 * to it, both ways.
 */
export const ERROR_CODES = [
  'internal_error',
  'protocol_violation',
  'frame_too_large',
  'bad_stream_header',
  'stream_refused',
  'going_away',
  'agent_failed',
  'invalid_json',
  'unknown_event_type',
  'invalid_event',
  'event_too_large',
  'invalid_value',
  'input_audio_buffer_commit_empty',
  'response_not_found',
  'item_not_found',
  'unauthorized',
  'limit_exceeded',
] as const;
/** A known `error.code` of a server `error` event. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Every `error.type` of a server `error` event. */
export const ERROR_TYPES = ['invalid_request_error', 'server_error'] as const;
/** `invalid_request_error` (the client's event was wrong) or `server_error`. */
export type ErrorType = (typeof ERROR_TYPES)[number];

/** What went wrong, as a stable string. */
export type VoqErrorCode =
  /** The user (or the browser's policy) refused the microphone. */
  | 'mic_denied'
  /** No microphone, or it could not be opened. */
  | 'mic_unavailable'
  /** The server could not be reached (or refused the connection). */
  | 'unreachable'
  /** TLS failed: the pinned certificate hash does not match, or the certificate is not trusted. */
  | 'certificate'
  /** The peer broke voq/1 (or we could not parse it). */
  | 'protocol'
  /** The browser lacks something needed (WebCodecs Opus, AudioWorklet, WebTransport…). */
  | 'unsupported'
  /** The connection closed (by the server, the network, or `close()`). */
  | 'closed'
  /** The server sent an `error` event. */
  | 'server_error'
  /** Used after `close()`. */
  | 'invalid_state';

export class VoqError extends Error {
  readonly code: VoqErrorCode;
  constructor(code: VoqErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** `mic_denied` or `mic_unavailable`. */
export class MicrophoneError extends VoqError {}

/** `unreachable`: nothing answered, or every transport failed. */
export class UnreachableError extends VoqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('unreachable', message, options);
  }
}

/** `certificate`: the TLS handshake failed against a server that is otherwise up. */
export class CertificateError extends VoqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('certificate', message, options);
  }
}

/** `protocol`: malformed bytes or events; `wireCode` is the voq code the stream is stopped with. */
export class ProtocolError extends VoqError {
  readonly wireCode: number;
  constructor(message: string, wireCode: number = Code.ProtocolViolation) {
    super('protocol', message);
    this.wireCode = wireCode;
  }
}

/** `unsupported`: a browser capability is missing. */
export class UnsupportedError extends VoqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('unsupported', message, options);
  }
}

/** `closed`: the connection ended; `wireCode` is the voq close code when one was given. */
export class ClosedError extends VoqError {
  readonly wireCode: number | null;
  constructor(message: string, wireCode: number | null = null) {
    super('closed', message);
    this.wireCode = wireCode;
  }
}
