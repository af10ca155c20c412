/**
 * What the client needs from a carrier: QUIC-like streams with voq error codes. Two
 * implementations: {@link WebTransportTransport} (HTTP/3, the browser's QUIC) and
 * {@link WebSocketTransport} (the stream mux of docs/PROTOCOL.md over one WebSocket).
 *
 * Streams are callback-based and writes are fire-and-forget (queued in order): voq's audio is a
 * few KB/s, and the server's send-ahead rule bounds what comes the other way.
 */

export type TransportName = 'webtransport' | 'websocket';

/** The sending half of a stream. Writes are queued in order and never block. */
export interface SendStream {
  /** Ends the stream after the bytes written (FIN). */
  write(bytes: Uint8Array): void;
  finish(): void;
  /** Abandons the stream with a voq code (RESET_STREAM). */
  reset(code: number): void;
  /** Called when the peer asks us to stop (STOP_SENDING) with its code. */
  onStop: ((code: number) => void) | null;
}

/** The receiving half of a stream. Set the callbacks before returning from `onIncomingUni`. */
export interface RecvStream {
  /** A number unique among this transport's streams (the mux id on WebSocket). */
  readonly id: number;
  onData: ((bytes: Uint8Array) => void) | null;
  onFin: (() => void) | null;
  onReset: ((code: number) => void) | null;
  /** Asks the peer to stop sending (STOP_SENDING) with a voq code. */
  stop(code: number): void;
}

export interface CloseInfo {
  /** The voq code (WebSocket close code − 4000; the WebTransport close code), if any. */
  code: number | null;
  reason: string;
  /** Whether we closed it. */
  local: boolean;
}

export interface Transport {
  readonly name: TransportName;
  /** The control stream: the client's first bidirectional stream. Call once. */
  openBidi(): { send: SendStream; recv: RecvStream };
  /** A new client unidirectional stream (one per user turn). */
  openUni(): SendStream;
  /** Called for every stream the server opens. */
  onIncomingUni: ((stream: RecvStream) => void) | null;
  /** Smoothed round-trip time in ms, once known. */
  rttMs(): number | null;
  /** Closes the connection with a voq code (default 0, `no_error`). */
  close(code?: number, reason?: string): void;
  /** Resolves once, when the connection is closed (by either side or the network). */
  readonly closed: Promise<CloseInfo>;
}
