/**
 * @voq/client — voq/1 ("voice over QUIC") in the browser.
 *
 * - {@link VoqClient}: the whole thing (microphone, WebTransport/WebSocket, session, playout).
 * - {@link connect}: just the carrier race; {@link ClientSession}: the sans-IO state machine;
 *   {@link Reconnector}: the sans-IO reconnection policy and turn replay.
 * - `wire`, `mux`, `varint`: the byte formats of docs/PROTOCOL.md; {@link MuxConnection}: the
 *   WebSocket mux's rules as a sans-IO state machine.
 */

export { VoqClient, microphoneConstraints } from './client.js';
export type { ClientState, LocalEventMap, MicrophoneProcessing, Mode, VoqClientOptions, VoqEvent, VoqEventMap, VoqStats } from './client.js';
export { connect, certificateHashes, fetchServerConfig, raceTransports, webSocketUrl } from './connect.js';
export type { Attempt, ConnectOptions, Connected, Dial, TransportChoice, VoqServerConfig } from './connect.js';
export { ClientSession, DEFAULT_SESSION_CONFIG } from './session.js';
export type { ClientOutput, InStream, InterruptStats, OutStream, PlayoutSnapshot, ResponseStats, SessionConfig, TurnStats } from './session.js';
export { DEFAULT_RECONNECT_CONFIG, Reconnector } from './reconnect.js';
export type { Packet, ReconnectAction, ReconnectConfig, ReconnectState, ReplayTurn } from './reconnect.js';
export { Playout } from './playout.js';
export type { PlayoutState, Rendered } from './playout.js';
export {
  CertificateError,
  ClosedError,
  Code,
  ERROR_CODES,
  ERROR_TYPES,
  MicrophoneError,
  ProtocolError,
  UnreachableError,
  UnsupportedError,
  STREAM_CODES,
  VoqError,
  codeName,
} from './errors.js';
export type { ErrorCode, ErrorType, StreamCodeName, VoqErrorCode } from './errors.js';
export * from './events.js';
export * from './wire.js';
export * from './mux.js';
export { DEFAULT_MUX_CONFIG, MuxConnection, streamErrorMessage } from './muxconn.js';
export type { MuxConfig, MuxOutput, MuxResult, Side as MuxSide, StreamError as MuxStreamError } from './muxconn.js';
export * from './varint.js';
export type { CloseInfo, RecvStream, SendStream, Transport, TransportName } from './transport.js';
export { WebSocketTransport, connectWebSocket, CLOSE_CODE_BASE } from './websocket.js';
export type { ConnectWebSocketOptions, WebSocketLike, WebSocketTransportOptions } from './websocket.js';
export { WebTransportTransport, connectWebTransport, webTransportAvailable } from './webtransport.js';
export { BrowserAudio } from './audio/browser.js';
export type { BrowserAudioOptions } from './audio/browser.js';
export type { AudioIO, EchoLoopbackState, PlayerIO } from './audio/io.js';
export { browserCodecs, pcm16Codecs, floatToPcm16, pcm16ToFloat, opusSupport, To24k } from './audio/codecs.js';
export type { AudioFrameDecoder, AudioFrameEncoder, CodecFactory } from './audio/codecs.js';
export { Emitter } from './emitter.js';
