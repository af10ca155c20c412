/**
 * Errors of @voq/client and the application error codes of voq/1 (docs/PROTOCOL.md, "Error
 * codes"). Everything the client throws or rejects with is a {@link VoqError} with a stable
 * `code`, so an application can tell the user something useful ("allow the microphone", "the
 * server is down") without parsing messages.
 */

/** The wire codes of RESET_STREAM, STOP_SENDING and connection close (docs/PROTOCOL.md). */
export const Code = {
  NoError: 0x00,
  InternalError: 0x01,
  ProtocolViolation: 0x02,
  FrameTooLarge: 0x03,
  BadStreamHeader: 0x04,
  Cancelled: 0x05,
  StreamRefused: 0x06,
  GoingAway: 0x07,
  AgentFailed: 0x08,
  VersionMismatch: 0x09,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const CODE_NAMES: readonly string[] = [
  'no_error',
  'internal_error',
  'protocol_violation',
  'frame_too_large',
  'bad_stream_header',
  'cancelled',
  'stream_refused',
  'going_away',
  'agent_failed',
  'version_mismatch',
];

/** The `error.code` string of a wire code (`cancelled` for 5), or `code_N` for unknown ones. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `code_${code}`;
}

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
