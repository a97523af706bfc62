// TypeScript declarations of the crosswire JavaScript client.

/** The error codes a request can fail with ('REFUSED': join/leave answered `{ok: false}`). */
export type ErrorCode = 'WS_NOT_OPEN' | 'CALLBACK_TIMEOUT' | 'ENCODE_ERROR' | 'INVALID_ARGUMENT' | 'REFUSED';

/** A failed request: an Error with the seed's `error` (message) and `errorCode` fields. */
export interface RequestError extends Error {
  error: string;
  errorCode: ErrorCode;
}

/** What emitWithPromise resolves with (it never rejects). */
export type EmitResult<T = any> =
  | { success: true; data: T }
  | { success: false; error: string; errorCode: ErrorCode };

/** A constructor compatible with the standard WebSocket (browsers, Node 22+, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ConnectorOptions {
  /** ws:// or wss:// URL; the path may select a server route. */
  url: string;
  /** Appended to the URL's query string (URL-encoded; a key already there is replaced). */
  customParams?: Record<string, string | number | boolean | null | undefined> | null;
  /** Heartbeat interval in ms (0: off). Default 10000. */
  pingInterval?: number;
  /** How long the heartbeat echo may take before `pong-timeout`, close 4002 and reconnect. Default 2000. */
  pongTimeout?: number;
  /** The heartbeat text frame, echoed by the server. Default ''. */
  pingMessage?: string;
  /** The seed's name for pingMessage. */
  pingMsg?: string;
  /** Attempts that wait fastReconnectInterval before the delay grows. Default 3. */
  fastReconnectThreshold?: number;
  /** Delay of the first attempts, and the smallest delay. Default 3000. */
  fastReconnectInterval?: number;
  /** Longest delay between attempts. Default 120000. */
  maxReconnectInterval?: number;
  /** The seed's name for maxReconnectInterval. */
  reconnectMaxInterval?: number;
  /** Reconnect attempts before `repeat-limit` (null/Infinity: unlimited). Default Infinity. */
  repeatLimit?: number | null;
  /** How long a request waits for its reply before CALLBACK_TIMEOUT. Default 5000. */
  callbackTimeout?: number;
  /** How long a request waits before its onPending hook fires. Default 100. */
  pendingTimeout?: number;
  /** How long one connection attempt may take before it counts as failed (0: no limit). Default 10000. */
  connectTimeout?: number;
  /** The event join() and the rejoins send. Default 'join'. */
  joinEvent?: string;
  /** The event leave() sends. Default 'leave'. */
  leaveEvent?: string;
  /** The WebSocket implementation (default: the global WebSocket). */
  WebSocket?: WebSocketConstructor | any;
}

export interface EmitOptions {
  callbackTimeout?: number;
  pendingTimeout?: number;
  /** Called once if no reply came within pendingTimeout (e.g. to show a spinner). */
  onPending?: () => void;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface ReconnectInfo {
  /** Attempt number since the last successful open (1-based). */
  repeat: number;
  /** Delay in ms before this attempt. */
  timeout: number;
}

/** A position in a room's history: offsets count 1, 2, 3, … within one epoch. */
export interface Position {
  offset: number;
  /** Opaque; a new epoch means the history was lost and offsets started again. */
  epoch: string;
}

/** Where a server event sits in its stream: the second listener argument of positioned events. */
export interface StreamPosition extends Position {
  /** The stream's name (`<namespace>/<room>` on crosswire); an opaque key. */
  stream: string;
}

/** A join reply: `{ok: true}` without history; stream, position and `recovered` with it. */
export interface JoinReply {
  ok: boolean;
  stream?: string;
  offset?: number;
  epoch?: string;
  /** true: every message missed since the last position was replayed; false: reload the room's state. */
  recovered?: boolean;
  [key: string]: any;
}

/** A room joined again on a new connection (`rejoin` event). */
export interface RejoinInfo {
  room: string;
  /** false (also without history): messages may have been missed, reload the room's state. */
  recovered: boolean;
  stream?: string;
  offset?: number;
  epoch?: string;
}

/** A rejoin that failed (`rejoin-error` event); the room stays joined, tried again on the next reconnect. */
export interface RejoinError {
  room: string;
  error: RequestError;
}

export interface ConnectorEvents {
  open: (event: any) => void;
  close: (info: CloseInfo) => void;
  error: (event: any) => void;
  message: (data: any) => void;
  ping: () => void;
  pong: (latencyMs: number) => void;
  reconnect: (info: ReconnectInfo) => void;
  'repeat-limit': (repeatLimit: number) => void;
  'pong-timeout': () => void;
  rejoin: (info: RejoinInfo) => void;
  'rejoin-error': (info: RejoinError) => void;
}

/** A server event's listener: its payload, and its position when the event has one. */
export type ServerEventListener = (payload: any, position?: StreamPosition) => void;

export type Tag = string | number;

export declare class WebSocketConnector {
  constructor(options: ConnectorOptions);
  /** The options in effect (defaults filled in). */
  readonly options: Required<Omit<ConnectorOptions, 'pingMsg' | 'reconnectMaxInterval'>>;
  /** The URL dialled, custom parameters included. */
  readonly url: string;
  /** The current socket (null between connections). */
  readonly ws: WebSocketLike | null;

  on<K extends keyof ConnectorEvents>(event: K, listener: ConnectorEvents[K], tag?: Tag): this;
  on(event: string, listener: ServerEventListener, tag?: Tag): this;
  once<K extends keyof ConnectorEvents>(event: K, listener: ConnectorEvents[K], tag?: Tag): this;
  once(event: string, listener: ServerEventListener, tag?: Tag): this;
  /** By listener, by tag, every listener of the event (no second argument), or everything (no arguments). */
  off(event?: string, listenerOrTag?: ((...args: any[]) => void) | Tag): this;
  /** Removes every listener registered with `tag`, on every event. */
  offTag(tag: Tag): this;
  listenerCount(event: string): number;

  /** Answers the server's requests named `event` with the handler's (awaited) return value. */
  onRequest(event: string, handler: (payload: any) => any | Promise<any>): this;
  offRequest(event: string): this;

  isOpen(): boolean;
  /** Sends without expecting a reply; returns whether the frame was sent. */
  emit(event: string, data?: any): boolean;
  /** Sends and calls back with the reply or a RequestError; returns whether the frame was sent. */
  emit<T = any>(
    event: string,
    data: any,
    callback: (err: RequestError | null, data: T | null) => void,
    options?: EmitOptions
  ): boolean;
  emitWithPromise<T = any>(event: string, data?: any, options?: EmitOptions): Promise<EmitResult<T>>;

  /**
   * Joins `room` (event `joinEvent`, payload `{room, since?}`); resolves with the reply, rejects
   * with a RequestError (also 'REFUSED' on `{ok: false}`). The room is joined again on every reconnect.
   */
  join(room: string, options?: EmitOptions): Promise<JoinReply>;
  /** Forgets `room` and its position, sends `leaveEvent` `{room}`; resolves with the reply. */
  leave<T = any>(room: string, options?: EmitOptions): Promise<T>;
  /** The joined rooms. */
  rooms(): string[];
  /** The last position seen in `room`'s stream, if it has one. */
  position(room: string): Position | undefined;

  reconnect(resetCount?: boolean): void;
  reconnecting(): boolean;
  setPingInterval(interval: number, immediate?: boolean): void;
  getPingInterval(): number;
  manualClose(): void;
}

/** Delay before reconnect attempt `attempt` (1-based); `jitter` is drawn from [0, fast). */
export declare function reconnectDelay(attempt: number, threshold: number, fast: number, max: number, jitter: number): number;
/** `url` with `params` merged into its query string. */
export declare function buildUrl(url: string, params?: Record<string, any> | null): string;

export default WebSocketConnector;
