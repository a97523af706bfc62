/*!
 * crosswire JavaScript client — a drop-in replacement for the seed framework's
 * WebSocketConnector: heartbeat and latency, reconnect with backoff, requests with replies,
 * timeouts and a pending hook, answers to crosswire's server → client requests, room joins
 * that recover the messages missed while away.
 * License: MIT OR Apache-2.0.
 */

// Close codes this client uses (SPEC §1).
const CLOSE_MANUAL = 4001;
const CLOSE_HEARTBEAT = 4002;
const CLOSE_ABNORMAL = 1006;

const NOT_OPEN = 'WS_NOT_OPEN';
const TIMEOUT = 'CALLBACK_TIMEOUT';
const REFUSED = 'REFUSED';
const INVALID = 'INVALID_ARGUMENT';

// WebSocket readyState values (the same for every implementation).
const CONNECTING = 0;
const OPEN = 1;

const DEFAULTS = {
  url: '',
  customParams: null,
  pingInterval: 10000,
  pongTimeout: 2000,
  pingMessage: '',
  fastReconnectThreshold: 3,
  fastReconnectInterval: 3000,
  maxReconnectInterval: 120000,
  repeatLimit: Infinity,
  callbackTimeout: 5000,
  pendingTimeout: 100,
  connectTimeout: 10000,
  joinEvent: 'join',
  leaveEvent: 'leave',
  WebSocket: null,
};

function noop() {}

/**
 * Delay in ms before reconnect attempt number `attempt` (1-based): the first `threshold`
 * attempts wait `fast`; attempt n after that waits min(2^(n - threshold) * fast + jitter, max),
 * never less than `fast`. `jitter` is the random part, drawn by the caller from [0, fast).
 */
export function reconnectDelay(attempt, threshold, fast, max, jitter) {
  if (attempt <= threshold) return fast;
  const grown = Math.pow(2, attempt - threshold) * fast + (jitter || 0);
  return Math.floor(Math.max(Math.min(grown, max), fast));
}

/**
 * `url` with `params` merged into its query string: a key already in the query takes the new
 * value in place, new keys are appended; keys and values are encoded with encodeURIComponent.
 * null and undefined values are left out.
 */
export function buildUrl(url, params) {
  if (!params || typeof params !== 'object') return url;
  let hash = '';
  let i = url.indexOf('#');
  if (i >= 0) {
    hash = url.slice(i);
    url = url.slice(0, i);
  }
  i = url.indexOf('?');
  const base = i >= 0 ? url.slice(0, i) : url;
  const pairs = i >= 0 ? url.slice(i + 1).split('&').filter(Boolean) : [];
  const decode = (s) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch (e) {
      return s;
    }
  };
  Object.keys(params).forEach((key) => {
    const value = params[key];
    if (value == null) return;
    const pair = encodeURIComponent(key) + '=' + encodeURIComponent(String(value));
    const at = pairs.findIndex((p) => decode(p.split('=')[0]) === key);
    if (at >= 0) pairs[at] = pair;
    else pairs.push(pair);
  });
  return base + (pairs.length ? '?' + pairs.join('&') : '') + hash;
}

function failure(code, message) {
  const error = new Error(message);
  error.error = message; // the seed's error objects carry the message as `error`
  error.errorCode = code;
  return error;
}

/** `{stream, offset, epoch}` of a positioned event or join reply (PROTOCOL.md, history), or undefined. */
function positionOf(f) {
  if (!f || typeof f.stream !== 'string' || !Number.isInteger(f.offset) || typeof f.epoch !== 'string') return undefined;
  return { stream: f.stream, offset: f.offset, epoch: f.epoch };
}

function checkRoom(room) {
  if (!room || typeof room !== 'string') throw failure(INVALID, 'room must be a non-empty string');
}

function report(error) {
  if (typeof console !== 'undefined' && console.error) console.error('[crosswire]', error);
}

/**
 * A WebSocket connection that keeps itself alive. See README.md for the full API.
 */
export class WebSocketConnector {
  constructor(options) {
    const given = options || {};
    const o = Object.assign({}, DEFAULTS, given);
    // The seed's option names are accepted too.
    if (given.pingMessage === undefined && given.pingMsg !== undefined) o.pingMessage = given.pingMsg;
    if (given.maxReconnectInterval === undefined && given.reconnectMaxInterval !== undefined) {
      o.maxReconnectInterval = given.reconnectMaxInterval;
    }
    if (o.repeatLimit == null) o.repeatLimit = Infinity;
    const Impl = o.WebSocket || (typeof WebSocket !== 'undefined' ? WebSocket : null);
    if (typeof Impl !== 'function') {
      throw new TypeError(
        'crosswire: no WebSocket implementation found. This platform has no global WebSocket: ' +
          "pass one as the `WebSocket` option, e.g. new WebSocketConnector({ url, WebSocket: require('ws') })"
      );
    }
    if (typeof o.url !== 'string' || !/^wss?:\/\//i.test(o.url)) {
      throw new TypeError('crosswire: `url` must be a ws:// or wss:// URL, got ' + JSON.stringify(o.url));
    }
    this.options = o;
    /** The URL dialled, custom parameters included. */
    this.url = buildUrl(o.url, o.customParams);
    this.ws = null;
    this._Impl = Impl;
    this._listeners = {}; // event -> [{ fn, once, tag }]
    this._requests = {}; // event -> request handler (server → client requests)
    this._pending = {}; // callbackId -> { done, timers }
    this._nextId = 0;
    this._rooms = new Map(); // joined room -> its stream (null: the server keeps no history)
    this._positions = new Map(); // stream -> { offset, epoch }, the last seen
    this._idStream = null; // the stream of the messages sent to this client's id (`@<id>`)
    this._joining = new Map(); // room -> token of the latest join() waiting for its reply
    this._repeat = 0; // reconnect attempts since the last open
    this._scheduled = false; // a reconnect is scheduled or its attempt is running
    this._stopped = false; // manualClose() was called
    this._open = false;
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._pingSent = null;
    this._connect();
  }

  // ----- handlers -----

  /** Calls `listener` on every `event`; `tag` groups listeners for off(event, tag) / offTag(tag). */
  on(event, listener, tag) {
    return this._add(event, listener, tag, false);
  }

  /** Like on(), removed after its first call. */
  once(event, listener, tag) {
    return this._add(event, listener, tag, true);
  }

  _add(event, fn, tag, once) {
    if (!event || typeof event !== 'string') throw new TypeError('event must be a non-empty string');
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    (this._listeners[event] || (this._listeners[event] = [])).push({ fn, once, tag });
    return this;
  }

  /**
   * off(event, listener) removes that listener; off(event, tag) the listeners registered with
   * that tag; off(event) every listener of the event; off() every listener.
   */
  off(event, listenerOrTag) {
    if (event == null) {
      this._listeners = {};
    } else if (listenerOrTag === undefined) {
      delete this._listeners[event];
    } else {
      this._filter(event, (l) => l.fn !== listenerOrTag && l.tag !== listenerOrTag);
    }
    return this;
  }

  /** Removes every listener registered with `tag`, whatever its event. */
  offTag(tag) {
    Object.keys(this._listeners).forEach((event) => this._filter(event, (l) => l.tag !== tag));
    return this;
  }

  _filter(event, keep) {
    const list = this._listeners[event];
    if (!list) return;
    const rest = list.filter(keep);
    if (rest.length) this._listeners[event] = rest;
    else delete this._listeners[event];
  }

  /** Number of listeners of `event`. */
  listenerCount(event) {
    return (this._listeners[event] || []).length;
  }

  _emit(event, arg, position) {
    const list = this._listeners[event];
    if (!list) return;
    const remove = list.filter((l) => l.once);
    if (remove.length) this._filter(event, (l) => remove.indexOf(l) < 0);
    list.forEach((l) => {
      try {
        // The position is a second argument only when there is one: listeners written for
        // one argument (e.g. `arr.push.bind(arr)`) see exactly what they saw before.
        if (position === undefined) l.fn.call(this, arg);
        else l.fn.call(this, arg, position);
      } catch (e) {
        report(e);
      }
    });
  }

  /**
   * Answers the server's requests named `event` (events carrying an `ackId`) with the value
   * `handler(payload)` returns or resolves to. on() listeners still see the event.
   */
  onRequest(event, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this._requests[event] = handler;
    return this;
  }

  /** Stops answering requests named `event`. */
  offRequest(event) {
    delete this._requests[event];
    return this;
  }

  // ----- sending -----

  /** Whether the connection is open. */
  isOpen() {
    return !!this.ws && this._open && this.ws.readyState === OPEN;
  }

  /**
   * Sends `event` with `data`. With a callback, asks for a reply: callback(null, reply) or
   * callback(err) with err.errorCode 'WS_NOT_OPEN' or 'CALLBACK_TIMEOUT'.
   * Returns whether the frame was sent.
   */
  emit(event, data, callback, options) {
    if (typeof callback === 'function') return this._request(event, data, options, callback);
    if (!event || typeof event !== 'string') throw new TypeError('event must be a non-empty string');
    return this._send({ event, payload: data === undefined ? null : data });
  }

  /**
   * Sends `event` and resolves with { success: true, data } or
   * { success: false, error, errorCode }; never rejects.
   */
  emitWithPromise(event, data, options) {
    return new Promise((resolve) => {
      const done = (err, reply) =>
        resolve(err ? { success: false, error: err.message, errorCode: err.errorCode } : { success: true, data: reply });
      try {
        this._request(event, data, options, done);
      } catch (e) {
        done(failure('INVALID_ARGUMENT', e.message));
      }
    });
  }

  _send(frame) {
    if (!this.isOpen()) return false;
    try {
      this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
      return true;
    } catch (e) {
      return false;
    }
  }

  _request(event, data, options, done) {
    if (!event || typeof event !== 'string') throw new TypeError('event must be a non-empty string');
    const opts = options || {};
    if (!this.isOpen()) {
      done(failure(NOT_OPEN, 'WebSocket is not open'), null);
      return false;
    }
    const id = (++this._nextId).toString(36) + '.' + Math.random().toString(36).slice(2, 8);
    let text;
    try {
      text = JSON.stringify({ event, payload: data === undefined ? null : data, callbackId: id });
    } catch (e) {
      done(failure('ENCODE_ERROR', e.message), null);
      return false;
    }
    const callbackTimeout = opts.callbackTimeout || this.options.callbackTimeout;
    const pendingTimeout = opts.pendingTimeout || this.options.pendingTimeout;
    const entry = { done, timers: [] };
    entry.timers.push(
      setTimeout(() => {
        this._settle(id, failure(TIMEOUT, 'no reply to `' + event + '` within ' + callbackTimeout + ' ms'), null);
      }, callbackTimeout)
    );
    if (typeof opts.onPending === 'function' && pendingTimeout < callbackTimeout) {
      entry.timers.push(
        setTimeout(() => {
          try {
            opts.onPending();
          } catch (e) {
            report(e);
          }
        }, pendingTimeout)
      );
    }
    this._pending[id] = entry;
    if (!this._send(text)) this._settle(id, failure(NOT_OPEN, 'WebSocket is not open'), null);
    return true;
  }

  /** A request whose reply `{ok: false, error}` is a failure too (errorCode 'REFUSED'). */
  _ask(event, data, options, done) {
    this._request(event, data, options, (err, reply) => {
      if (!err && reply && reply.ok === false) {
        err = failure(REFUSED, reply.error ? String(reply.error) : '`' + event + '` refused');
      }
      done(err, reply);
    });
  }

  _settle(id, err, reply) {
    const entry = this._pending[id];
    if (!entry) return;
    delete this._pending[id];
    entry.timers.forEach(clearTimeout);
    try {
      entry.done(err, reply);
    } catch (e) {
      report(e);
    }
  }

  // ----- connection -----

  _connect() {
    this._reconnectTimer = null;
    if (this._stopped) return;
    let ws;
    try {
      ws = new this._Impl(this._dialUrl());
    } catch (e) {
      this._emit('error', e);
      this._schedule();
      return;
    }
    this.ws = ws;
    this._open = false;
    const mine = (fn) => (e) => {
      if (this.ws === ws) fn.call(this, e);
    };
    ws.onopen = mine(this._onOpen);
    ws.onmessage = mine((e) => this._onMessage(e && e.data !== undefined ? e.data : e));
    ws.onerror = mine((e) => this._lost(e));
    ws.onclose = mine(this._onClose);
    if (this.options.connectTimeout > 0) {
      this._connectTimer = setTimeout(
        mine(() => this._lost(new Error('connect timed out after ' + this.options.connectTimeout + ' ms'))),
        this.options.connectTimeout
      );
    }
  }

  _onOpen(event) {
    clearTimeout(this._connectTimer);
    this._open = true;
    this._repeat = 0;
    this._scheduled = false;
    this._startHeartbeat(false); // before the listeners: one may close again
    this._rejoin(); // before the listeners too: the joins go first on the new connection
    this._emit('open', event);
  }

  _onClose(event) {
    const code = event && event.code;
    const reason = (event && event.reason) || '';
    if (code === CLOSE_ABNORMAL || !this._open) {
      // No close frame (the server died, the network broke) or the connect failed: an error.
      this._lost(event);
      return;
    }
    // A close from the server: reported, never reconnected by itself (the app decides).
    this._release();
    this._emit('close', { code, reason });
  }

  /** The connection broke or could not be made: `error`, `close` 1006 if it was open, reconnect. */
  _lost(event) {
    const wasOpen = this._open;
    this._release();
    this._emit('error', event);
    if (wasOpen) this._emit('close', { code: CLOSE_ABNORMAL, reason: '' });
    this._schedule(); // no-op if a close handler already called reconnect()
  }

  /** Detaches and closes the current socket, stops the heartbeat and the connect timer. */
  _release(code, reason) {
    this._stopHeartbeat();
    clearTimeout(this._connectTimer);
    const ws = this.ws;
    this.ws = null;
    this._open = false;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = noop;
    if (ws.readyState === CONNECTING || ws.readyState === OPEN) {
      try {
        ws.close(code || 1000, reason || '');
      } catch (e) {
        // already closing
      }
      // `ws` (Node) waits up to 30 s for the close handshake; a dead peer never answers.
      if (typeof ws.terminate === 'function') {
        const t = setTimeout(() => ws.readyState !== 3 && ws.terminate(), 1000);
        if (t && t.unref) t.unref();
      }
    }
  }

  /** Counts the next attempt and schedules it, or gives up at the repeat limit. */
  _schedule() {
    if (this._stopped || this._reconnectTimer) return;
    const o = this.options;
    if (this._repeat >= o.repeatLimit) {
      this._scheduled = false;
      this._emit('repeat-limit', o.repeatLimit);
      return;
    }
    this._repeat++;
    const fast = o.fastReconnectInterval;
    const timeout = reconnectDelay(this._repeat, o.fastReconnectThreshold, fast, o.maxReconnectInterval, Math.random() * fast);
    this._scheduled = true;
    this._reconnectTimer = setTimeout(() => this._connect(), timeout);
    this._emit('reconnect', { repeat: this._repeat, timeout });
  }

  /**
   * Starts reconnecting by hand (a close from the server never reconnects by itself). With
   * `resetCount`, the attempt count restarts (fast delays, full repeat limit). If a reconnect
   * is already scheduled or connecting, only the count is reset; an open connection is closed
   * (1000) and re-established; after manualClose() nothing happens.
   */
  reconnect(resetCount) {
    if (this._stopped) return;
    if (resetCount) this._repeat = 0;
    if (this._reconnectTimer || (this.ws && !this._open)) return;
    if (this.ws) {
      this._release(1000, 'reconnect');
      this._emit('close', { code: 1000, reason: 'reconnect' });
    }
    this._schedule();
  }

  /** Whether a reconnect is scheduled or its attempt is in progress. */
  reconnecting() {
    return this._scheduled && !this._stopped;
  }

  /** Closes for good: close code 4001, no more reconnects, every timer released. */
  manualClose() {
    if (this._stopped) return;
    this._stopped = true;
    this._scheduled = false;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const wasOpen = this._open;
    this._release(CLOSE_MANUAL, 'manual close');
    Object.keys(this._pending).forEach((id) => this._settle(id, failure(NOT_OPEN, 'client closed before the reply came'), null));
    if (wasOpen) this._emit('close', { code: CLOSE_MANUAL, reason: 'manual close' });
  }

  // ----- heartbeat -----

  /** The current heartbeat interval in ms (0: heartbeat off). */
  getPingInterval() {
    return this.options.pingInterval;
  }

  /** Changes the heartbeat interval (0 turns it off); with `immediate`, pings right away. */
  setPingInterval(interval, immediate) {
    if (typeof interval !== 'number' || !(interval >= 0)) throw new TypeError('pingInterval must be a number >= 0');
    this.options.pingInterval = interval;
    if (this.isOpen()) this._startHeartbeat(immediate);
  }

  _startHeartbeat(immediate) {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    const every = this.options.pingInterval;
    if (every > 0) this._pingTimer = setInterval(() => this._ping(), every);
    if (immediate) this._ping();
  }

  _stopHeartbeat() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = this._pongTimer = this._pingSent = null;
  }

  _ping() {
    if (!this._send(String(this.options.pingMessage))) return;
    // With a heartbeat already in flight, its deadline stands.
    if (this._pingSent == null) {
      this._pingSent = Date.now();
      this._pongTimer = setTimeout(() => this._pongTimeout(), this.options.pongTimeout);
    }
    this._emit('ping');
  }

  _pongTimeout() {
    this._emit('pong-timeout');
    if (!this.ws) return; // a handler closed or reconnected already
    this._release(CLOSE_HEARTBEAT, 'heartbeat timeout');
    this._emit('close', { code: CLOSE_HEARTBEAT, reason: 'heartbeat timeout' });
    this._schedule();
  }

  // ----- rooms -----

  /**
   * Joins `room`: sends `join` `{room, since?}` (`since`: the last position seen in the room's
   * stream) and resolves with the reply; rejects on a failed request or an `{ok: false}` reply.
   * Once joined, the room is joined again on every reconnect, until leave().
   */
  join(room, options) {
    return new Promise((resolve, reject) => {
      checkRoom(room);
      const token = {};
      this._joining.set(room, token);
      this._ask(this.options.joinEvent, this._joinPayload(room), options, (err, reply) => {
        // A leave() or a newer join() of the room since this one was sent has the last word.
        const latest = this._joining.get(room) === token;
        if (latest) this._joining.delete(room);
        if (err) return reject(err);
        if (latest) this._joined(room, reply);
        resolve(reply);
      });
    });
  }

  /** Leaves `room`: forgets it and its position at once, sends `leave` `{room}`, resolves with the reply. */
  leave(room, options) {
    return new Promise((resolve, reject) => {
      checkRoom(room);
      this._positions.delete(this._rooms.get(room));
      this._rooms.delete(room);
      this._joining.delete(room);
      this._ask(this.options.leaveEvent, { room }, options, (err, reply) => (err ? reject(err) : resolve(reply)));
    });
  }

  /** The joined rooms' names. */
  rooms() {
    return Array.from(this._rooms.keys());
  }

  /** The last position `{offset, epoch}` seen in `room`'s stream, or undefined. */
  position(room) {
    const at = this._positions.get(this._rooms.get(room));
    return at && { offset: at.offset, epoch: at.epoch };
  }

  _joinPayload(room) {
    const since = this.position(room);
    return since ? { room, since } : { room };
  }

  /** Remembers `room` as joined, with the stream and position of the join reply if it has them. */
  _joined(room, reply) {
    this._rooms.set(room, reply && typeof reply.stream === 'string' ? reply.stream : null);
    this._track(positionOf(reply));
  }

  /**
   * The URL to dial: `url`, plus the position of this client's id stream (`@<id>`) once one
   * was seen, so that the server sends what was sent to the id meanwhile.
   */
  _dialUrl() {
    const at = this._idStream && this._positions.get(this._idStream);
    if (!at) return this.url;
    const params = Object.assign({}, this.options.customParams, { offset: at.offset, epoch: at.epoch });
    return buildUrl(this.options.url, params);
  }

  /** Keeps `at` as its stream's position if it is newer: another epoch, or a greater offset. */
  _track(at) {
    if (!at) return;
    if (at.stream.startsWith('@')) this._idStream = at.stream;
    const known = this._positions.get(at.stream);
    if (!known || known.epoch !== at.epoch || at.offset > known.offset) {
      this._positions.set(at.stream, { offset: at.offset, epoch: at.epoch });
    }
  }

  /** Joins every joined room again (on a new connection): `rejoin` or `rejoin-error` for each. */
  _rejoin() {
    this.rooms().forEach((room) => {
      this._ask(this.options.joinEvent, this._joinPayload(room), null, (error, reply) => {
        if (!this._rooms.has(room)) return; // left in the meantime
        if (error) return this._emit('rejoin-error', { room, error });
        this._joined(room, reply);
        const r = reply || {};
        this._emit('rejoin', { room, recovered: r.recovered === true, stream: r.stream, offset: r.offset, epoch: r.epoch });
      });
    });
  }

  // ----- receiving -----

  _onMessage(data) {
    this._emit('message', data);
    if (data === String(this.options.pingMessage)) {
      if (this._pingSent != null) {
        const latency = Date.now() - this._pingSent;
        clearTimeout(this._pongTimer);
        this._pongTimer = this._pingSent = null;
        this._emit('pong', latency);
      }
      return;
    }
    if (typeof data !== 'string') return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    const payload = frame.payload === undefined ? null : frame.payload;
    if (typeof frame.event !== 'string') {
      if (frame.callbackId != null) this._settle(String(frame.callbackId), null, payload);
      return;
    }
    const position = positionOf(frame);
    this._track(position);
    // The server's report on the id stream after a connect: where this client now is.
    if (frame.event === 'recovered') this._track(positionOf(payload));
    const ackId = frame.ackId;
    const handler = ackId != null && this._requests[frame.event];
    if (handler) {
      const ws = this.ws;
      new Promise((resolve) => resolve(handler.call(this, payload))).then(
        (reply) => {
          // Answer on the connection that asked, if it is still open.
          if (this.ws === ws) this._send({ ackId, payload: reply === undefined ? null : reply });
        },
        report
      );
    }
    this._emit(frame.event, payload, position);
  }
}

export default WebSocketConnector;
