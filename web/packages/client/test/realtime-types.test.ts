/**
 * @voq/client's event types against the Realtime API's GA types of the official `openai` npm
 * package (pinned in web/package.json). The checks are in the types: `npm run typecheck` fails
 * when a voq event that shares a Realtime name stops being assignable to the GA type (a field
 * renamed, retyped or missing). voq's extensions (the `voq` objects) are extra fields, which the
 * GA types allow; the `audio/opus` format is voq's own, so sessions are checked with pcm16 formats.
 * The runtime tests check that the parser accepts what the types describe.
 */
import type * as GA from 'openai/resources/realtime/realtime';
import { describe, expect, it } from 'vitest';
import type { AudioFormat, ClientEvent, ServerEventMap, SessionInfo, SessionUpdateBody } from '../src/events.js';
import { parseServerEvent } from '../src/events.js';

/** `true` only when A is assignable to B. */
type Assignable<A, B> = [A] extends [B] ? true : false;
const conforms = <T extends true>(t: T) => t;

type Pcm = Extract<AudioFormat, { type: 'audio/pcm' }>;
/** A session object with pcm16 formats (the Realtime API's only 24 kHz one). */
type PcmSession = Omit<SessionInfo, 'audio'> & {
  audio: {
    input: Omit<SessionInfo['audio']['input'], 'format'> & { format: Pcm };
    output: Omit<SessionInfo['audio']['output'], 'format'> & { format: Pcm };
  };
};
type Server<K extends keyof ServerEventMap> = ServerEventMap[K] & { event_id: string };
type Client<K extends ClientEvent['type']> = Extract<ClientEvent, { type: K }>;

// Server events: every one that shares a Realtime name.
conforms<Assignable<Omit<Server<'session.created'>, 'session'> & { session: PcmSession }, GA.SessionCreatedEvent>>(true);
conforms<Assignable<Omit<Server<'session.updated'>, 'session'> & { session: PcmSession }, GA.SessionUpdatedEvent>>(true);
conforms<Assignable<Server<'input_audio_buffer.speech_started'>, GA.InputAudioBufferSpeechStartedEvent>>(true);
conforms<Assignable<Server<'input_audio_buffer.speech_stopped'>, GA.InputAudioBufferSpeechStoppedEvent>>(true);
conforms<Assignable<Server<'input_audio_buffer.committed'>, GA.InputAudioBufferCommittedEvent>>(true);
conforms<Assignable<Server<'input_audio_buffer.cleared'>, GA.InputAudioBufferClearedEvent>>(true);
conforms<Assignable<Server<'response.created'>, GA.ResponseCreatedEvent>>(true);
conforms<Assignable<Server<'response.done'>, GA.ResponseDoneEvent>>(true);
conforms<Assignable<Server<'conversation.item.truncated'>, GA.ConversationItemTruncatedEvent>>(true);
conforms<Assignable<Server<'error'>, GA.RealtimeErrorEvent>>(true);
conforms<Assignable<Server<'response.output_audio_transcript.delta'>, GA.ResponseAudioTranscriptDeltaEvent>>(true);
conforms<Assignable<Server<'response.output_audio_transcript.done'>, GA.ResponseAudioTranscriptDoneEvent>>(true);

// Client events voq sends, in the shapes a Realtime server accepts.
type PcmUpdate = Omit<SessionUpdateBody, 'audio'> & {
  audio?: {
    input?: Omit<NonNullable<NonNullable<SessionUpdateBody['audio']>['input']>, 'format'> & { format?: Pcm };
    output?: { format?: Pcm };
  };
};
conforms<Assignable<Omit<Client<'session.update'>, 'session'> & { session: PcmUpdate }, GA.SessionUpdateEvent>>(true);
conforms<Assignable<Client<'input_audio_buffer.commit'>, GA.InputAudioBufferCommitEvent>>(true);
conforms<Assignable<Client<'input_audio_buffer.clear'>, GA.InputAudioBufferClearEvent>>(true);
conforms<Assignable<Client<'response.create'>, GA.ResponseCreateEvent>>(true);
conforms<Assignable<Client<'response.cancel'>, GA.ResponseCancelEvent>>(true);
conforms<Assignable<Client<'conversation.item.truncate'>, GA.ConversationItemTruncateEvent>>(true);

// The check can fail: the beta session shape is not a GA session.
conforms<Assignable<{ type: 'session.created'; event_id: string; session: { input_audio_format: string } }, GA.SessionCreatedEvent> extends false ? true : false>(true);

describe('Realtime GA types', () => {
  it('values typed as the GA events parse as voq events', () => {
    const created: GA.SessionCreatedEvent = {
      type: 'session.created',
      event_id: 'event_1',
      session: {
        type: 'realtime',
        audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, turn_detection: null }, output: { format: { type: 'audio/pcm', rate: 24000 } } },
      },
    };
    // voq's own fields ride along: the session id and the `voq` object.
    const voq = { id: 'sess_1', voq: { version: 'voq/1', send_ahead_ms: 2000, played_report_interval_ms: 50, transport: 'ws' } };
    const parsed = parseServerEvent(JSON.stringify({ ...created, session: { ...created.session, ...voq } }));
    expect(parsed.ok).toBe(true);
    const response: GA.ResponseCreatedEvent = {
      type: 'response.created',
      event_id: 'event_2',
      response: {
        object: 'realtime.response',
        id: 'resp_1',
        status: 'in_progress',
        output: [{ id: 'item_2', type: 'message', role: 'assistant', content: [{ type: 'output_audio' }] }],
      },
    };
    expect(parseServerEvent(JSON.stringify(response)).ok).toBe(true);
    // A Realtime format voq does not run is refused by the parser, not misread.
    const pcmu = { ...created, session: { ...created.session, ...voq, audio: { input: { format: { type: 'audio/pcmu' } }, output: { format: { type: 'audio/pcm' } } } } };
    expect(parseServerEvent(JSON.stringify(pcmu)).ok).toBe(false);
  });
});
