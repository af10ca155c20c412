/**
 * The control events of voq/1 (docs/PROTOCOL.md, "Events"). Names and shapes are the OpenAI
 * Realtime API's GA ones wherever it has one (test/realtime-types.ts checks them against the
 * `openai` package's types); voq extensions are the `voq` objects, the `audio/opus` format,
 * `output_audio_buffer.played` and `voq.ping`/`voq.pong`.
 */

import { utf8Strict } from './bytes.js';
import type { ErrorCode, ErrorType } from './errors.js';

export type Codec = 'pcm16' | 'opus';
export const CODECS: readonly Codec[] = ['pcm16', 'opus'];
/** Every voq/1 audio stream runs at 24 kHz; pts count samples at this rate. */
export const SAMPLE_RATE = 24000;
/** Nominal frame duration. */
export const FRAME_MS = 20;
/** Samples in one nominal frame (480). */
export const FRAME_SAMPLES = (SAMPLE_RATE * FRAME_MS) / 1000;

// ---- audio formats ----

/**
 * A Realtime audio format object: `{type: 'audio/pcm', rate: 24000}` is the Realtime API's pcm16;
 * `{type: 'audio/opus', rate: 24000}` is voq's Opus (a voq extension).
 */
export type AudioFormat = { type: 'audio/pcm'; rate?: 24000 } | { type: 'audio/opus'; rate?: 24000 };

/** The format object of a codec. */
export function audioFormat(codec: Codec): AudioFormat {
  return { type: codec === 'pcm16' ? 'audio/pcm' : 'audio/opus', rate: 24000 };
}

/** The codec a format object names, or null for one voq does not run. */
export function codecOfFormat(format: AudioFormat): Codec {
  return format.type === 'audio/pcm' ? 'pcm16' : 'opus';
}

/**
 * Server VAD settings, as in the Realtime API; voq reads `type` and keeps the rest as given
 * (docs/PROTOCOL.md).
 */
export interface ServerVad {
  type: 'server_vad';
  create_response?: boolean;
  idle_timeout_ms?: number | null;
  interrupt_response?: boolean;
  prefix_padding_ms?: number;
  silence_duration_ms?: number;
  threshold?: number;
}

// ---- client → server ----

/** The GA session object of `session.update`; absent fields keep their value. */
export interface SessionUpdateBody {
  type: 'realtime';
  audio?: {
    input?: {
      format?: AudioFormat;
      /** `null` = push-to-talk, `{type: 'server_vad'}` = server VAD; absent = unchanged. */
      turn_detection?: ServerVad | null;
    };
    output?: { format?: AudioFormat };
  };
  voq?: { send_ahead_ms?: number; resume?: ResumeRequest };
}

export type ClientEvent =
  | { type: 'session.update'; session: SessionUpdateBody; event_id?: string }
  | { type: 'input_audio_buffer.commit'; event_id?: string }
  | { type: 'input_audio_buffer.clear'; event_id?: string }
  | { type: 'response.create'; event_id?: string }
  | { type: 'response.cancel'; response_id?: string; event_id?: string }
  | {
      type: 'conversation.item.truncate';
      item_id: string;
      content_index: number;
      audio_end_ms: number;
      event_id?: string;
    }
  | { type: 'output_audio_buffer.played'; response_id: string; played_ms: number; buffered_ms: number; event_id?: string }
  | { type: 'voq.ping'; id: number; event_id?: string };

// ---- server → client ----

export interface SessionInfo {
  type: 'realtime';
  id: string;
  audio: {
    input: { format: AudioFormat; turn_detection: ServerVad | null };
    output: { format: AudioFormat };
  };
  voq: {
    version: string;
    send_ahead_ms: number;
    played_report_interval_ms: number;
    /** `quic`, `webtransport` or `ws`. */
    transport: string;
    /** The server's id in its fleet (QUIC-LB server id, hex), when it has one. */
    server_id?: string;
    /**
     * A token to take the session back after losing the connection, on a server that keeps
     * sessions resumable (docs/PROTOCOL.md, "Resuming a session"). `VoqClient` uses it when its
     * connection is lost; without one it starts a new session and sends its unconfirmed turns
     * whole.
     */
    resume_token?: string;
  };
}

/** The assistant item a response carries, as the one entry of `response.output`. */
export interface ResponseOutputItem {
  id: string;
  type: 'message';
  object?: 'realtime.item';
  role: 'assistant';
  status?: 'in_progress' | 'completed' | 'incomplete';
  content: { type: 'output_audio' }[];
}

export interface ResponseInfo {
  object?: 'realtime.response';
  id: string;
  /** `in_progress`, `completed`, `cancelled` or `failed`. */
  status: 'in_progress' | 'completed' | 'cancelled' | 'failed';
  output_modalities?: 'audio'[];
  output: ResponseOutputItem[];
  voq?: { audio_ms_generated: number; audio_ms_sent: number; bytes_sent: number; frames_sent: number } | null;
}

/** The assistant item whose audio a response carries (`conversation.item.truncate` names it). */
export function responseItemId(response: ResponseInfo): string {
  const item = response.output.find((i) => i.type === 'message' && i.role === 'assistant');
  return item?.id ?? '';
}

/**
 * The body of a server `error` event. `type` and `code` are typed with the values voq/1 knows
 * (`ERROR_TYPES`, `ERROR_CODES`), and still take any string: a newer server's code parses, and
 * shows up as a string the application does not know.
 */
export interface ErrorInfo {
  type: ErrorType | (string & {});
  code: ErrorCode | (string & {});
  message: string;
  event_id?: string;
}

export interface ServerEventMap {
  'session.created': { type: 'session.created'; session: SessionInfo };
  'session.updated': { type: 'session.updated'; session: SessionInfo };
  'input_audio_buffer.speech_started': {
    type: 'input_audio_buffer.speech_started';
    item_id: string;
    audio_start_ms: number;
  };
  'input_audio_buffer.speech_stopped': {
    type: 'input_audio_buffer.speech_stopped';
    item_id: string;
    audio_end_ms: number;
  };
  'input_audio_buffer.committed': {
    type: 'input_audio_buffer.committed';
    item_id: string;
    previous_item_id?: string | null;
    /** voq extension: what the server holds of the turn. */
    voq: { frames: number; audio_ms: number; bytes: number };
  };
  'input_audio_buffer.cleared': { type: 'input_audio_buffer.cleared' };
  'response.created': { type: 'response.created'; response: ResponseInfo };
  'response.done': { type: 'response.done'; response: ResponseInfo };
  /** What the agent is saying, as text (a model's audio transcript), ahead of the audio. */
  'response.output_audio_transcript.delta': {
    type: 'response.output_audio_transcript.delta';
    response_id: string;
    item_id: string;
    output_index: number;
    content_index: number;
    delta: string;
  };
  /** The response's whole transcript, when it ends. */
  'response.output_audio_transcript.done': {
    type: 'response.output_audio_transcript.done';
    response_id: string;
    item_id: string;
    output_index: number;
    content_index: number;
    transcript: string;
  };
  'conversation.item.truncated': {
    type: 'conversation.item.truncated';
    item_id: string;
    content_index: number;
    audio_end_ms: number;
  };
  error: { type: 'error'; error: ErrorInfo };
  /**
   * voq extension: the answer to a resume request (instead of `session.created`): the same
   * session, a new resume token, and what the server holds (docs/PROTOCOL.md, "Resuming a
   * session").
   */
  'voq.session.resumed': { type: 'voq.session.resumed'; session: SessionInfo; voq: ResumedState };
  /** voq extension: the answer to `voq.ping`. */
  'voq.pong': { type: 'voq.pong'; id: number };
}

/** What a resumed session holds (`voq.session.resumed`'s `voq`). */
export interface ResumedState {
  /** Open turns (send the rest from `held_pts`) and turns committed lately (`committed`). */
  turns: Array<{ item_id: string; held_pts: number; committed?: { frames: number; audio_ms: number; bytes: number } }>;
  /** The reply that goes on, on a new stream for the same response, from `from_pts`. */
  reply?: { response_id: string; item_id: string; from_pts: number };
}

/** `session.voq.resume` of a connection's first `session.update`. */
export interface ResumeRequest {
  token: string;
  /** The reply the client was receiving: it holds every sample before `from_pts`. */
  reply?: { response_id: string; from_pts: number; played_ms: number };
}

export type ServerEventType = keyof ServerEventMap;
/**
 * A server event. Every one carries `event_id` (`event_N`, unique in its session), as the
 * Realtime API's GA events do.
 */
export type ServerEvent = ServerEventMap[ServerEventType] & { event_id?: string };

export const SERVER_EVENT_TYPES: readonly ServerEventType[] = [
  'session.created',
  'session.updated',
  'input_audio_buffer.speech_started',
  'input_audio_buffer.speech_stopped',
  'input_audio_buffer.committed',
  'input_audio_buffer.cleared',
  'response.created',
  'response.done',
  'response.output_audio_transcript.delta',
  'response.output_audio_transcript.done',
  'conversation.item.truncated',
  'error',
  'voq.session.resumed',
  'voq.pong',
];

/** Why a server event could not be used (codes as the server's own `error` events use them). */
export interface EventParseError {
  code: Extract<ErrorCode, 'invalid_json' | 'unknown_event_type' | 'invalid_event'>;
  message: string;
}

type Check = (v: Record<string, unknown>) => string | null;
const str = (k: string): Check => (v) => (typeof v[k] === 'string' ? null : `"${k}" must be a string`);
const num = (k: string): Check => (v) =>
  typeof v[k] === 'number' && Number.isInteger(v[k]) && (v[k] as number) >= 0 ? null : `"${k}" must be an unsigned integer`;
const obj = (k: string, inner: Check[]): Check => (v) => {
  const o = v[k];
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return `"${k}" must be an object`;
  for (const c of inner) {
    const e = c(o as Record<string, unknown>);
    if (e) return `${k}.${e}`;
  }
  return null;
};
const u32 = (k: string): Check => (v) => num(k)(v) ?? ((v[k] as number) <= 0xffffffff ? null : `"${k}" must fit in 32 bits`);
const oneOf = (k: string, values: readonly string[]): Check => (v) =>
  typeof v[k] === 'string' && values.includes(v[k]) ? null : `"${k}" must be one of ${values.join(', ')}`;
/** Absent or `null` passes (an optional field, as Rust's `Option`); anything else must pass `check`. */
const optional = (k: string, check: Check): Check => (v) => (v[k] === undefined || v[k] === null ? null : check(v));
const oneOf24k: Check = (v) => (v.rate === SAMPLE_RATE ? null : `"rate" must be ${SAMPLE_RATE}`);
const format = (k: string): Check => obj(k, [oneOf('type', ['audio/pcm', 'audio/opus']), optional('rate', oneOf24k)]);
const session = obj('session', [
  oneOf('type', ['realtime']),
  str('id'),
  obj('audio', [obj('input', [format('format')]), obj('output', [format('format')])]),
  obj('voq', [str('version'), num('send_ahead_ms'), num('played_report_interval_ms'), str('transport')]),
]);
/** `response.status`: the four of docs/PROTOCOL.md (Rust's `ResponseStatus`). */
const RESPONSE_STATUSES = ['in_progress', 'completed', 'cancelled', 'failed'] as const;
/** `response.output` holds the assistant message item whose audio the response carries. */
const assistantItem: Check = (v) => {
  const out = v.output;
  if (!Array.isArray(out)) return '"output" must be an array';
  const item = out.find((i) => typeof i === 'object' && i !== null && (i as Record<string, unknown>).role === 'assistant') as
    | Record<string, unknown>
    | undefined;
  if (!item) return '"output" has no assistant item';
  return typeof item.id === 'string' ? null : 'output[].id must be a string';
};
const response = obj('response', [
  str('id'),
  oneOf('status', RESPONSE_STATUSES),
  assistantItem,
  optional('voq', obj('voq', [num('audio_ms_generated'), num('audio_ms_sent'), num('bytes_sent'), num('frames_sent')])),
]);

const CHECKS: Record<ServerEventType, Check[]> = {
  'session.created': [session],
  'session.updated': [session],
  'input_audio_buffer.speech_started': [str('item_id'), num('audio_start_ms')],
  'input_audio_buffer.speech_stopped': [str('item_id'), num('audio_end_ms')],
  'input_audio_buffer.committed': [
    str('item_id'),
    optional('previous_item_id', str('previous_item_id')),
    obj('voq', [num('frames'), num('audio_ms'), num('bytes')]),
  ],
  'input_audio_buffer.cleared': [],
  'response.created': [response],
  'response.done': [response],
  'response.output_audio_transcript.delta': [str('response_id'), str('item_id'), num('output_index'), u32('content_index'), str('delta')],
  'response.output_audio_transcript.done': [str('response_id'), str('item_id'), num('output_index'), u32('content_index'), str('transcript')],
  'conversation.item.truncated': [str('item_id'), u32('content_index'), num('audio_end_ms')],
  error: [obj('error', [str('type'), str('code'), str('message'), optional('event_id', str('event_id'))])],
  'voq.session.resumed': [
    session,
    obj('voq', [(v) => (Array.isArray(v.turns) ? null : '"turns" must be an array')]),
  ],
  'voq.pong': [num('id')],
};

/** Parses one server event body. Unknown types are reported as such, so a newer server's events are skipped precisely. */
export function parseServerEvent(body: Uint8Array | string): { ok: true; event: ServerEvent } | { ok: false; error: EventParseError } {
  let value: unknown;
  try {
    value = JSON.parse(typeof body === 'string' ? body : utf8Strict.decode(body));
  } catch (e) {
    return { ok: false, error: { code: 'invalid_json', message: `event is not JSON: ${(e as Error).message}` } };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: { code: 'invalid_json', message: 'event is not a JSON object' } };
  }
  const v = value as Record<string, unknown>;
  if (typeof v.type !== 'string') {
    return { ok: false, error: { code: 'invalid_json', message: 'event has no string field "type"' } };
  }
  const type = v.type;
  if (!(SERVER_EVENT_TYPES as readonly string[]).includes(type)) {
    return { ok: false, error: { code: 'unknown_event_type', message: `unknown event type "${type}"` } };
  }
  for (const check of CHECKS[type as ServerEventType]) {
    const e = check(v);
    if (e) return { ok: false, error: { code: 'invalid_event', message: `invalid "${type}" event: ${e}` } };
  }
  return { ok: true, event: v as unknown as ServerEvent };
}

/** The JSON text of a client event, fields in the order the Rust side writes them. */
export function clientEventJson(event: ClientEvent): string {
  return JSON.stringify(event);
}
