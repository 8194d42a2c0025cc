// netcode.js: a browser client for netcode rooms (dependency-free ES module).
//
// Served by every RoomServer at /netcode.js. It speaks the protocol of docs/PROTOCOL.md over
// the browser's RTCPeerConnection, with the same two pre-negotiated data channels as the
// Python client: "reliable" (id 0, ordered) and "lossy" (id 1, unordered, no retransmits).
//
//   import { Room, Replica } from "/netcode.js";
//   const room = new Room();
//   room.on("dataReceived", (packet) => console.log(packet.participant?.identity, packet.data));
//   room.on("eventReceived", (event, participant, topic) => console.log(event.type, event.fields));
//   await room.connect(location.origin, token);
//   await room.localParticipant.publishData("hello", { reliable: true, topic: "chat" });
//   room.sendEvent("Chat", { text: "hi" }, { topic: "say" });
//   const replica = new Replica(room, { topic: "position" });
//   requestAnimationFrame(function draw() { replica.interpolated(); ... });
//
// Names follow the Python API (Room, Replica, publishData, DataPacket) in JavaScript's
// camelCase; events are emitted with on(name, handler) and carry plain objects.

const VERSION = 1;
const MAX_DATAGRAM_BYTES = 1160;
const HEADER_BYTES = 9;
const MAX_FRAME_PAYLOAD_BYTES = MAX_DATAGRAM_BYTES - HEADER_BYTES - 3;
const FRAGMENT_DATA_BYTES = MAX_FRAME_PAYLOAD_BYTES - 5;
const MAX_FRAGMENTS = 8;
const ACK_WINDOW = 33;
const MAX_RELIABLE_PAYLOAD_BYTES = 15 * 1024;
const MAX_LOSSY_PAYLOAD_BYTES = 8 * 1024;
const LOSSY_BACKLOG_LIMIT_BYTES = 8 * MAX_DATAGRAM_BYTES;
const LOSSY_DATA_MAX_AGE_S = 0.25;
const PING_INTERVAL_S = 1.0;
const ACK_EVERY = 32;
const ACK_DELAY_S = 0.25;
const PUMP_INTERVAL_MS = 10;

export const FrameType = Object.freeze({
  PING: 1, PONG: 2, FRAGMENT: 3, DATA: 16, SNAPSHOT: 17, INPUT: 18, EVENT: 19,
  INPUT_ACK: 21, RECEIPT: 22,
});
const KNOWN_FRAMES = new Set(Object.values(FrameType));

export const Kind = Object.freeze({
  JOINED: 1, PARTICIPANT_JOINED: 2, PARTICIPANT_LEFT: 3, TOPIC: 4, SUBSCRIBE: 5, DATA: 6,
  PUBLISH_TRACK: 7, TRACK_ACCEPTED: 8, TRACK_REFUSED: 9, TRACK_PUBLISHED: 10,
  TRACK_UNPUBLISHED: 11, ERROR: 12, EXTENSION: 13, ACK: 14, RESUMED: 15, LEAVE: 16,
  PARTICIPANT_RECONNECTING: 17, PARTICIPANT_RECONNECTED: 18,
});
const UNCOUNTED = new Set([Kind.ACK, Kind.RESUMED]);

export const ExtensionChannel = Object.freeze({ EVENTS: 1, RPC: 2, STREAMS: 3, HOST: 4, HOST_ENTITY: 5 });

const FLAG_TEXT = 1;
const FLAG_TOPIC_NAME = 2;

export class NetcodeError extends Error {}
export class ProtocolError extends NetcodeError {}
export class ConnectError extends NetcodeError {
  constructor(message, code = "") {
    super(message);
    this.code = code;
  }
}
export class DisconnectedError extends NetcodeError {}
export class SchemaMismatch extends NetcodeError {}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes) {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new ProtocolError("text is not UTF-8");
  }
}

const seqDiff = (a, b) => ((a - b + 0x8000) & 0xffff) - 0x8000;
const seqAdd = (a, n) => (a + n) & 0xffff;
const nowSeconds = () => performance.now() / 1000;

// -- bytes ----------------------------------------------------------------------------------

class Writer {
  constructor(size = 64) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.length = 0;
  }
  _room(n) {
    if (this.length + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    bigger.set(this.buf.subarray(0, this.length));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(v) { this._room(1); this.buf[this.length++] = v & 0xff; return this; }
  u16(v) { this._room(2); this.view.setUint16(this.length, v); this.length += 2; return this; }
  u32(v) { this._room(4); this.view.setUint32(this.length, v >>> 0); this.length += 4; return this; }
  u64(v) {
    this._room(8);
    this.view.setBigUint64(this.length, BigInt(v));
    this.length += 8;
    return this;
  }
  f64(v) { this._room(8); this.view.setFloat64(this.length, v); this.length += 8; return this; }
  varint(v) {
    // LEB128 (construct's VarInt): 7 bits a byte, low first, 0x80 = more follows
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint of ${v}`);
    do {
      let byte = v % 128;
      v = Math.floor(v / 128);
      if (v > 0) byte |= 0x80;
      this.u8(byte);
    } while (v > 0);
    return this;
  }
  zigzag(v) {
    if (!Number.isSafeInteger(v)) throw new RangeError(`${v} is not a safe integer`);
    return this.varint(v >= 0 ? 2 * v : -2 * v - 1);
  }
  bytes(data) { this._room(data.length); this.buf.set(data, this.length); this.length += data.length; return this; }
  str(s) { const raw = utf8.encode(s); return this.varint(raw.length).bytes(raw); }
  str8(s) {
    const raw = utf8.encode(s);
    if (raw.length > 255) throw new RangeError(`name of ${raw.length} bytes`);
    return this.u8(raw.length).bytes(raw);
  }
  finish() { return this.buf.slice(0, this.length); }
}

class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.end = end;
  }
  _need(n) { if (this.pos + n > this.end) throw new ProtocolError("message truncated"); }
  get remaining() { return this.end - this.pos; }
  u8() { this._need(1); return this.bytes[this.pos++]; }
  u16() { this._need(2); const v = this.view.getUint16(this.pos); this.pos += 2; return v; }
  u32() { this._need(4); const v = this.view.getUint32(this.pos); this.pos += 4; return v; }
  u64() { this._need(8); const v = this.view.getBigUint64(this.pos); this.pos += 8; return Number(v); }
  i64() { this._need(8); const v = this.view.getBigInt64(this.pos); this.pos += 8; return Number(v); }
  f64() { this._need(8); const v = this.view.getFloat64(this.pos); this.pos += 8; return v; }
  flag() { return this.u8() !== 0; }
  varint() {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const byte = this.u8();
      value += (byte & 0x7f) * scale;
      if (!(byte & 0x80)) return value;
      scale *= 128;
    }
    throw new ProtocolError("varint too long");
  }
  zigzag() { const z = this.varint(); return z % 2 === 0 ? z / 2 : -(z + 1) / 2; }
  take(n) { this._need(n); const out = this.bytes.subarray(this.pos, this.pos + n); this.pos += n; return out; }
  rest() { return this.take(this.end - this.pos); }
  str() { return decodeUtf8(this.take(this.varint())); }
  str8() { return decodeUtf8(this.take(this.u8())); }
  done(what) { if (this.pos !== this.end) throw new ProtocolError(`${what}: trailing bytes`); }
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected bytes (Uint8Array or ArrayBuffer) or a string");
}

// -- a tiny event emitter -------------------------------------------------------------------

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(name, handler) {
    if (!this._handlers.has(name)) this._handlers.set(name, []);
    this._handlers.get(name).push(handler);
    return this;
  }
  off(name, handler) {
    const list = this._handlers.get(name);
    if (list) this._handlers.set(name, list.filter((h) => h !== handler));
    return this;
  }
  once(name, handler) {
    const wrapper = (...args) => { this.off(name, wrapper); handler(...args); };
    return this.on(name, wrapper);
  }
  emit(name, ...args) {
    for (const handler of [...(this._handlers.get(name) || [])]) {
      try {
        handler(...args);
      } catch (error) {
        console.error(`netcode: ${name} handler failed`, error);
      }
    }
  }
}

// -- the lossy channel: datagrams, acks, pings, fragments ----------------------------------

function frameBytes(n) { return n + (n < 0x80 ? 2 : 3); }

function encodeDatagram(sequence, ack, ackBits, frames) {
  const w = new Writer(MAX_DATAGRAM_BYTES);
  w.u8(ack === null ? VERSION << 4 : (VERSION << 4) | 1).u16(sequence);
  w.u16(ack === null ? 0 : ack).u32(ack === null ? 0 : ackBits);
  for (const [type, payload] of frames) {
    const n = payload.length;
    w.u8(type);
    if (n < 0x80) w.u8(n);
    else w.u8((n & 0x7f) | 0x80).u8(n >> 7);
    w.bytes(payload);
  }
  return w.finish();
}

function decodeDatagram(data) {
  const n = data.length;
  if (n < HEADER_BYTES || n > MAX_DATAGRAM_BYTES) throw new ProtocolError(`datagram of ${n} bytes`);
  const r = new Reader(data);
  const prefix = r.u8();
  const sequence = r.u16();
  let ack = r.u16();
  const ackBits = r.u32();
  if (prefix >> 4 !== VERSION) throw new ProtocolError(`protocol version ${prefix >> 4}`);
  if (prefix === VERSION << 4) {
    if (ack || ackBits) throw new ProtocolError("ack fields without has_ack");
    ack = null;
  } else if (prefix !== ((VERSION << 4) | 1)) {
    throw new ProtocolError("reserved header bits set");
  }
  const frames = [];
  let i = HEADER_BYTES;
  while (i < n) {
    const type = data[i];
    if (type === 0 || !KNOWN_FRAMES.has(type)) throw new ProtocolError(`frame type ${type}`);
    if (i + 1 >= n) throw new ProtocolError("frame truncated");
    let length = data[i + 1];
    i += 2;
    if (length & 0x80) {
      if (i >= n) throw new ProtocolError("frame truncated");
      const high = data[i++];
      if (high === 0 || high & 0x80) throw new ProtocolError("non-canonical frame length");
      length = (length & 0x7f) | (high << 7);
    }
    if (i + length > n) throw new ProtocolError("frame runs past the datagram");
    frames.push([type, data.subarray(i, i + length)]);
    i += length;
  }
  return { sequence, ack, ackBits, frames };
}

class Endpoint {
  // One side of the lossy path (netcode/core/endpoint.py): it numbers datagrams, acknowledges
  // the peer's, reports each sent frame ACKED or LOST once, answers PINGs and measures the
  // round trip and the peer's clock.
  constructor() {
    this.nextSequence = 0;
    this.sentTotal = 0;
    this.inFlight = new Map(); // sequence -> {sentAt, callbacks}, in send order
    this.queue = [];
    this.queueBytes = 0;
    this.receivedNewest = null;
    this.receivedBits = 0;
    this.ackOwedSince = null;
    this.maxAckDelay = 0.01;
    this.peerNewestAck = null;
    this.lastReceivedAt = null;
    this.srtt = null;
    this.rttvar = 0;
    this.clockSamples = []; // [roundTrip, offset], the last 8
    this.clockOffset = null; // peer clock minus ours (seconds)
    this.nextPingId = 0;
    this.nextPingAt = null;
    this.pingsOut = new Map();
    this.pongsOwed = [];
    this.nextMessageId = 0;
    this.partials = new Map();
    this.stats = { datagramsSent: 0, datagramsReceived: 0, bytesSent: 0, bytesReceived: 0,
      acked: 0, lost: 0, malformed: 0, duplicates: 0 };
  }

  get lossTimeout() {
    if (this.srtt === null) return 1.0;
    return Math.min(Math.max(1.5 * this.srtt + 4 * this.rttvar + this.maxAckDelay, 0.1), 3.0);
  }

  sendFrame(type, payload, { onDelivery = null, key = null, expiresAt = null } = {}) {
    if (payload.length > MAX_FRAME_PAYLOAD_BYTES) {
      if (payload.length > MAX_FRAGMENTS * FRAGMENT_DATA_BYTES) {
        throw new RangeError(`payload of ${payload.length} bytes is over the lossy limit`);
      }
      const id = this.nextMessageId;
      this.nextMessageId = seqAdd(id, 1);
      const count = Math.ceil(payload.length / FRAGMENT_DATA_BYTES);
      const tracker = onDelivery ? { callback: onDelivery, remaining: count } : null;
      for (let index = 0; index < count; index++) {
        const piece = payload.subarray(index * FRAGMENT_DATA_BYTES, (index + 1) * FRAGMENT_DATA_BYTES);
        const frame = new Writer(piece.length + 5).u8(type).u16(id).u8(index).u8(count).bytes(piece);
        this._enqueue(FrameType.FRAGMENT, frame.finish(), tracker, null, expiresAt);
      }
      return;
    }
    if (key !== null) {
      for (const entry of this.queue) {
        if (entry.key === key && !entry.cancelled) this._cancel(entry);
      }
    }
    const tracker = onDelivery ? { callback: onDelivery, remaining: 1 } : null;
    this._enqueue(type, payload, tracker, key, expiresAt);
  }

  _enqueue(type, payload, tracker, key, expiresAt) {
    const entry = { type, payload, tracker, key, expiresAt, cancelled: false, size: frameBytes(payload.length) };
    this.queue.push(entry);
    this.queueBytes += entry.size;
  }

  _cancel(entry) {
    entry.cancelled = true;
    this.queueBytes -= entry.size;
    if (entry.tracker) this._report(entry.tracker, false);
  }

  _report(tracker, acked) {
    if (!tracker.callback) return;
    if (acked) {
      tracker.remaining -= 1;
      if (tracker.remaining > 0) return;
    }
    const callback = tracker.callback;
    tracker.callback = null;
    callback(acked);
  }

  datagramsToSend(now) {
    const out = [];
    for (const entry of this.queue) {
      if (!entry.cancelled && entry.expiresAt !== null && now > entry.expiresAt) this._cancel(entry);
    }
    this.queue = this.queue.filter((entry) => !entry.cancelled);
    if (this.nextPingAt === null) this.nextPingAt = now;
    if (now >= this.nextPingAt) {
      const id = this.nextPingId;
      this.nextPingId = seqAdd(id, 1);
      this.pingsOut.set(id, now);
      if (this.pingsOut.size > 8) this.pingsOut.delete(this.pingsOut.keys().next().value);
      this.nextPingAt = now + PING_INTERVAL_S;
      const ping = new Writer(2).u16(id).finish();
      this.queue.unshift({ type: FrameType.PING, payload: ping, tracker: null, key: null,
        expiresAt: null, cancelled: false, size: frameBytes(2) });
      this.queueBytes += frameBytes(2);
    }
    while (this.queue.length || this.pongsOwed.length) {
      let room = MAX_DATAGRAM_BYTES - HEADER_BYTES;
      const frames = [];
      const trackers = [];
      for (const [id, receivedAt] of this.pongsOwed) {
        const pong = new Writer(14).u16(id).u32(Math.min(Math.round((now - receivedAt) * 1e6), 0xffffffff)).f64(now).finish();
        frames.push([FrameType.PONG, pong]);
        room -= frameBytes(pong.length);
      }
      this.pongsOwed = [];
      const skipped = [];
      while (this.queue.length && room > 2) {
        const entry = this.queue.shift();
        if (entry.size > room) {
          skipped.push(entry);
          if (skipped.length > 16) break;
          continue;
        }
        frames.push([entry.type, entry.payload]);
        room -= entry.size;
        this.queueBytes -= entry.size;
        if (entry.tracker) trackers.push(entry.tracker);
      }
      this.queue = skipped.concat(this.queue);
      if (!frames.length) break;
      out.push(this._emit(frames, trackers, now));
    }
    if (!out.length && this.ackOwedSince !== null && now >= this.ackOwedSince + this.maxAckDelay) {
      out.push(this._emit([], [], now));
    }
    return out;
  }

  _emit(frames, trackers, now) {
    const sequence = this.nextSequence;
    const data = encodeDatagram(sequence, this.receivedNewest, this.receivedBits, frames);
    this.nextSequence = seqAdd(sequence, 1);
    this.sentTotal += 1;
    this.ackOwedSince = null;
    this.stats.datagramsSent += 1;
    this.stats.bytesSent += data.length;
    if (frames.length) {
      if (this.inFlight.size >= 2048) this._lost(this.inFlight.keys().next().value);
      this.inFlight.set(sequence, { sentAt: now, trackers });
    }
    return data;
  }

  handleTimer(now) {
    const timeout = this.lossTimeout;
    for (const [sequence, sent] of this.inFlight) {
      if (now < sent.sentAt + timeout) break;
      this._lost(sequence);
    }
    for (const [id, partial] of this.partials) {
      if (now > partial.firstSeen + 1.0) this.partials.delete(id);
    }
  }

  _lost(sequence) {
    const sent = this.inFlight.get(sequence);
    this.inFlight.delete(sequence);
    this.stats.lost += 1;
    for (const tracker of sent.trackers) this._report(tracker, false);
  }

  _acked(sequence) {
    const sent = this.inFlight.get(sequence);
    this.inFlight.delete(sequence);
    this.stats.acked += 1;
    for (const tracker of sent.trackers) this._report(tracker, true);
  }

  // Returns the frames for the layers above ([type, payload] pairs), or null if dropped.
  receiveDatagram(data, now) {
    this.stats.datagramsReceived += 1;
    this.stats.bytesReceived += data.length;
    let datagram;
    try {
      datagram = decodeDatagram(data);
    } catch (error) {
      this.stats.malformed += 1;
      return null;
    }
    const sequence = datagram.sequence;
    const newest = this.receivedNewest;
    if (newest !== null) {
      const distance = seqDiff(sequence, newest);
      if (distance > 8192 || distance === 0) { this.stats.duplicates += 1; return null; }
      if (distance < 0) {
        if (-distance >= ACK_WINDOW) { this.stats.duplicates += 1; return null; }
        const bit = 1 << (-distance - 1);
        if ((this.receivedBits & bit) !== 0) { this.stats.duplicates += 1; return null; }
        this.receivedBits = (this.receivedBits | bit) >>> 0;
      } else {
        // shift in the previous newest (bit distance - 1), dropping what leaves the 32 bits
        const shifted = ((this.receivedBits << 1) | 1) >>> 0;
        this.receivedBits = distance - 1 >= 32 ? 0 : (shifted << (distance - 1)) >>> 0;
        this.receivedNewest = sequence;
      }
    } else {
      this.receivedNewest = sequence;
    }
    this.lastReceivedAt = now;
    if (datagram.frames.length && this.ackOwedSince === null) this.ackOwedSince = now;
    if (datagram.ack !== null) this._processAcks(datagram.ack, datagram.ackBits, now);
    const up = [];
    for (const [type, payload] of datagram.frames) {
      try {
        if (type === FrameType.PING) {
          if (payload.length !== 2) throw new ProtocolError("PING size");
          this.pongsOwed.push([new Reader(payload).u16(), now]);
          this.pongsOwed = this.pongsOwed.slice(-4);
        } else if (type === FrameType.PONG) {
          this._onPong(payload, now);
        } else if (type === FrameType.FRAGMENT) {
          const whole = this._onFragment(payload, now);
          if (whole) up.push(whole);
        } else {
          up.push([type, payload]);
        }
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        this.stats.malformed += 1;
      }
    }
    return up;
  }

  _processAcks(ack, ackBits, now) {
    if (this.sentTotal === 0) return;
    const age = seqDiff(seqAdd(this.nextSequence, -1), ack);
    if (!(age >= 0 && age < Math.min(this.sentTotal, 1 << 15))) return; // never sent: ignore
    const sent = this.inFlight.get(ack);
    if (sent) {
      this._rttSample(now - sent.sentAt);
      this._acked(ack);
    }
    for (let i = 0; i < 32; i++) {
      if (Math.floor(ackBits / 2 ** i) % 2) {
        const sequence = seqAdd(ack, -1 - i);
        if (this.inFlight.has(sequence)) this._acked(sequence);
      }
    }
    if (this.peerNewestAck === null || seqDiff(ack, this.peerNewestAck) > 0) this.peerNewestAck = ack;
    for (const sequence of [...this.inFlight.keys()]) {
      if (seqDiff(this.peerNewestAck, sequence) < ACK_WINDOW) break;
      this._lost(sequence);
    }
  }

  _rttSample(sample) {
    sample = Math.max(sample, 0);
    if (this.srtt === null) {
      this.srtt = sample;
      this.rttvar = sample / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - sample);
      this.srtt = 0.875 * this.srtt + 0.125 * sample;
    }
  }

  _onPong(payload, now) {
    if (payload.length !== 14) throw new ProtocolError("PONG size");
    const r = new Reader(payload);
    const id = r.u16();
    const holdUs = r.u32();
    const responderTime = r.f64();
    const sentAt = this.pingsOut.get(id);
    if (sentAt === undefined || Number.isNaN(responderTime)) return;
    this.pingsOut.delete(id);
    const roundTrip = Math.max(now - sentAt - holdUs / 1e6, 0);
    this.clockSamples.push([roundTrip, responderTime + roundTrip / 2 - now]);
    if (this.clockSamples.length > 8) this.clockSamples.shift();
    let best = this.clockSamples[0];
    for (const sample of this.clockSamples) if (sample[0] < best[0]) best = sample;
    this.clockOffset = best[1];
  }

  _onFragment(payload, now) {
    if (payload.length <= 5) throw new ProtocolError("FRAGMENT without data");
    const r = new Reader(payload);
    const inner = r.u8();
    const id = r.u16();
    const index = r.u8();
    const count = r.u8();
    if (count < 2 || count > MAX_FRAGMENTS || index >= count || inner === 0 || inner === FrameType.FRAGMENT) {
      throw new ProtocolError("bad FRAGMENT");
    }
    let partial = this.partials.get(id);
    if (!partial || partial.count !== count || partial.inner !== inner) {
      partial = { inner, count, pieces: new Map(), firstSeen: now };
      this.partials.set(id, partial);
      if (this.partials.size > 16) this.partials.delete(this.partials.keys().next().value);
    }
    partial.pieces.set(index, r.rest().slice());
    if (partial.pieces.size < count) return null;
    this.partials.delete(id);
    const w = new Writer();
    for (let i = 0; i < count; i++) w.bytes(partial.pieces.get(i));
    return [inner, w.finish()];
  }
}

// -- game events over the lossy channel (netcode/core/reliable.py) --------------------------

const EVENT_WINDOW = 1024;
const MAX_INLINE_EVENT_BYTES = 1000;

function varint2(w, v) {
  if (v < 0x80) w.u8(v);
  else if (v <= 0x3fff) w.u8((v & 0x7f) | 0x80).u8(v >> 7);
  else throw new RangeError(`${v} does not fit a two-byte varint`);
}

function readVarint2(r) {
  let v = r.u8();
  if (v & 0x80) {
    const high = r.u8();
    if (high === 0 || high & 0x80) throw new ProtocolError("non-canonical varint");
    v = (v & 0x7f) | (high << 7);
  }
  return v;
}

class EventChannel {
  // Reliable, ordered messages on EVENT frames: sent oldest first, resent when their datagram
  // is reported LOST or no ack came within the resend timeout; received into a reorder buffer
  // and delivered in id order. Messages over 1000 bytes go by the fallback path (the reliable
  // channel, EXTENSION channel 1) and keep their place in the sequence.
  constructor(endpoint, fallback) {
    this.endpoint = endpoint;
    this.fallback = fallback;
    this.nextId = 0;
    this.outgoing = new Map(); // id -> {data, lastSent, frame, due, resends}
    this.fallbackOutstanding = [];
    this.frameToken = 0;
    this.nextExpected = 0;
    this.buffer = new Map();
    this.delivered = [];
    this.fallbackAckOwed = false;
  }

  get resendTimeout() {
    const e = this.endpoint;
    if (e.srtt === null) return 0.25;
    return Math.min(Math.max(e.srtt + 2 * e.rttvar, 0.03), 1.0);
  }

  _base() {
    let base = this.nextId;
    if (this.outgoing.size) base = this.outgoing.keys().next().value;
    if (this.fallbackOutstanding.length && seqDiff(this.fallbackOutstanding[0], base) < 0) {
      base = this.fallbackOutstanding[0];
    }
    return base;
  }

  send(message) {
    if (this.outgoing.size + this.fallbackOutstanding.length >= EVENT_WINDOW) {
      throw new NetcodeError("the game-event queue is full (the server is not keeping up)");
    }
    const id = this.nextId;
    this.nextId = seqAdd(id, 1);
    if (message.length > MAX_INLINE_EVENT_BYTES) {
      this.fallback(id, message);
      this.fallbackOutstanding.push(id);
    } else {
      this.outgoing.set(id, { data: message, lastSent: null, frame: -1, due: false, resends: 0 });
    }
    return id;
  }

  flush(now) {
    if (this.fallbackAckOwed) {
      const ack = new Writer(2).u16(this.nextExpected).finish();
      this.fallbackAckOwed = false;
      this.endpoint.sendFrame(FrameType.EVENT, ack, {
        onDelivery: (acked) => { if (!acked) this.fallbackAckOwed = true; },
      });
    }
    const timeout = this.resendTimeout;
    const base = this._base();
    let frame = null;
    let ids = [];
    let previous = -1;
    let frames = 0;
    const finishFrame = () => {
      if (!frame) return;
      const token = this.frameToken++;
      const carried = ids;
      this.endpoint.sendFrame(FrameType.EVENT, frame.finish(), {
        onDelivery: (acked) => this._onFrame(token, carried, acked),
      });
      for (const id of carried) {
        const out = this.outgoing.get(id);
        if (out.lastSent !== null && !out.due) out.resends += 1;
        out.lastSent = now;
        out.frame = token;
        out.due = false;
      }
      frames += 1;
      frame = null;
      ids = [];
    };
    for (const [id, out] of this.outgoing) {
      if (seqDiff(id, base) >= EVENT_WINDOW || frames >= 4) break;
      const wait = Math.min(timeout * 2 ** Math.min(out.resends, 8), Math.max(timeout, 4.0));
      if (!(out.lastSent === null || out.due || now >= out.lastSent + wait)) continue;
      const skip = frame ? seqDiff(id, previous) - 1 : 0;
      const cost = (skip < 0x80 ? 1 : 2) + (out.data.length < 0x80 ? 1 : 2) + out.data.length;
      if (frame && frame.length + cost > MAX_FRAME_PAYLOAD_BYTES) {
        finishFrame();
        if (frames >= 4) break;
      }
      if (!frame) {
        frame = new Writer(256).u16(id);
        varint2(frame, 0);
      } else {
        varint2(frame, skip);
      }
      varint2(frame, out.data.length);
      frame.bytes(out.data);
      ids.push(id);
      previous = id;
    }
    finishFrame();
  }

  _onFrame(token, ids, acked) {
    for (const id of ids) {
      const out = this.outgoing.get(id);
      if (!out) continue;
      if (acked) this.outgoing.delete(id);
      else if (out.frame === token) out.due = true;
    }
  }

  receiveFrame(payload) {
    const r = new Reader(payload);
    const base = r.u16();
    if (!r.remaining) {
      // a fallback acknowledgement: the peer has every message before `base`
      if (seqDiff(this.nextId, base) < 0) return;
      while (this.fallbackOutstanding.length && seqDiff(base, this.fallbackOutstanding[0]) > 0) {
        this.fallbackOutstanding.shift();
      }
      return;
    }
    let span = -1;
    while (r.remaining) {
      const skip = readVarint2(r);
      const length = readVarint2(r);
      span += skip + 1;
      if (span > 0x7fff) throw new ProtocolError("EVENT ids span too far");
      this._accept(seqAdd(base, span), r.take(length).slice(), false);
    }
    this._deliver();
  }

  receiveFallback(id, message) {
    this._accept(id, message, true);
    this._deliver();
  }

  _accept(id, message, viaFallback) {
    const distance = seqDiff(id, this.nextExpected);
    if (distance < 0 || distance >= EVENT_WINDOW || this.buffer.has(id)) return;
    this.buffer.set(id, [message, viaFallback]);
  }

  _deliver() {
    while (this.buffer.has(this.nextExpected)) {
      const [message, viaFallback] = this.buffer.get(this.nextExpected);
      this.buffer.delete(this.nextExpected);
      this.delivered.push(message);
      if (viaFallback) this.fallbackAckOwed = true;
      this.nextExpected = seqAdd(this.nextExpected, 1);
    }
  }
}

// -- schema descriptions (docs/PROTOCOL.md "Schema description") ---------------------------

export const FieldKind = Object.freeze({
  FLOAT: 1, INT: 2, BOOL: 3, ENUM: 4, ANGLE: 5, QUAT: 6, STRING: 7, COLOR: 8,
});
export const GroupKind = Object.freeze({ DELTA: 0, RAW: 1, FLIP: 2, QUAT: 3, STRING: 4 });
export const EventFieldKind = Object.freeze({
  INT: 1, FLOAT: 2, BOOL: 3, STRING: 4, BYTES: 5, OPAQUE: 255,
});

//: The built-in event types, known before any description arrives (netcode/rooms/events.py).
const BUILTIN_EVENTS = [
  { typeId: 1, name: "Chat", fields: [["text", EventFieldKind.STRING]] },
  { typeId: 2, name: "Spawn", fields: [["entity_id", EventFieldKind.INT], ["kind", EventFieldKind.STRING],
    ["x", EventFieldKind.FLOAT], ["y", EventFieldKind.FLOAT]] },
  { typeId: 3, name: "Despawn", fields: [["entity_id", EventFieldKind.INT], ["reason", EventFieldKind.STRING]] },
];

const SQRT1_2 = Math.SQRT1_2;

function prepareField(field) {
  // slot widths and maxima, and the value of raw slots, as netcode/replication/schema.py has them
  switch (field.kind) {
    case FieldKind.FLOAT: {
      const step = (field.hi - field.lo) / field.steps;
      const perUnit = 1 / step;
      const exact = Math.abs(perUnit - Math.round(perUnit)) < 1e-9 ? Math.round(perUnit) : null;
      field.slotBits = [field.bits];
      field.slotMax = [field.steps];
      field.value = (s) => (exact !== null ? field.lo + s[0] / exact : field.lo + s[0] * step);
      break;
    }
    case FieldKind.INT:
      field.slotBits = [field.bits];
      field.slotMax = [field.hi - field.lo];
      field.value = (s) => field.lo + s[0];
      break;
    case FieldKind.BOOL:
      field.slotBits = [1];
      field.slotMax = [1];
      field.value = (s) => s[0] === 1;
      break;
    case FieldKind.ENUM:
      field.slotBits = [field.bits];
      field.slotMax = [field.members.length - 1];
      field.value = (s) => field.members[s[0]];
      break;
    case FieldKind.ANGLE: {
      const top = 2 ** field.bits - 1;
      const half = (top + 1) / 2;
      const scale = (top + 1) / (2 * Math.PI);
      field.slotBits = [field.bits];
      field.slotMax = [top];
      field.value = (s) => ((((s[0] + half) % (2 * half)) - half) / scale);
      break;
    }
    case FieldKind.QUAT: {
      const top = 2 ** field.bits - 1;
      field.slotBits = [2, field.bits, field.bits, field.bits];
      field.slotMax = [3, top, top, top];
      field.value = (s) => {
        const small = [s[1], s[2], s[3]].map((v) => (v / top) * (2 * SQRT1_2) - SQRT1_2);
        const largest = Math.sqrt(Math.max(0, 1 - small.reduce((a, v) => a + v * v, 0)));
        small.splice(s[0], 0, largest);
        return small;
      };
      break;
    }
    case FieldKind.STRING:
      field.slotBits = [field.bits];
      field.slotMax = [field.maxBytes];
      field.value = (s) => s[0];
      break;
    case FieldKind.COLOR:
      field.slotBits = [24];
      field.slotMax = [0xffffff];
      field.value = (s) => [s[0] >> 16, (s[0] >> 8) & 0xff, s[0] & 0xff];
      break;
    default:
      throw new ProtocolError(`unknown field kind ${field.kind}`);
  }
}

export function decodeDescription(bytes) {
  // The schema description a game host's HELLO carries after its clock.
  const r = new Reader(toBytes(bytes));
  const version = r.u8();
  if (version !== 1) throw new SchemaMismatch(`schema description version ${version}; this client reads 1`);
  const entities = new Map();
  for (let t = r.u8(); t > 0; t--) {
    const typeId = r.u8();
    const name = r.str8();
    const fields = [];
    for (let f = r.u8(); f > 0; f--) {
      const field = { name: r.str8(), kind: r.u8(), group: r.u8(), bits: r.u8() };
      if (field.bits < 1 || field.bits > 53) throw new ProtocolError(`field ${field.name} of ${field.bits} bits`);
      if (field.kind === FieldKind.FLOAT) {
        field.lo = r.f64(); field.hi = r.f64(); field.precision = r.f64(); field.steps = r.f64();
      } else if (field.kind === FieldKind.INT) {
        field.lo = r.i64(); field.hi = r.i64();
      } else if (field.kind === FieldKind.ENUM) {
        field.members = [];
        for (let m = r.u16(); m > 0; m--) field.members.push(r.str8());
      } else if (field.kind === FieldKind.STRING) {
        field.maxBytes = r.u8();
      }
      prepareField(field);
      fields.push(field);
    }
    const groups = [];
    for (let g = r.u8(); g > 0; g--) {
      groups.push({ kind: r.u8(), lengthBits: r.u8(), maxDeltaBits: r.u8(), slots: [], fields: [] });
    }
    let slot = 0;
    const wrapSlots = new Set();
    fields.forEach((field, index) => {
      const group = groups[field.group];
      if (!group) throw new ProtocolError(`field ${field.name} names group ${field.group}`);
      field.firstSlot = slot;
      group.fields.push(index);
      for (let i = 0; i < field.slotBits.length; i++) {
        if (field.kind === FieldKind.ANGLE) wrapSlots.add(slot);
        group.slots.push(slot++);
      }
    });
    const slotBits = fields.flatMap((f) => f.slotBits);
    const slotMax = fields.flatMap((f) => f.slotMax);
    entities.set(typeId, { typeId, name, fields, groups, slotBits, slotMax, wrapSlots });
  }
  const events = new Map();
  for (let t = r.u8(); t > 0; t--) {
    const typeId = r.u8();
    const name = r.str8();
    const fields = [];
    for (let f = r.u8(); f > 0; f--) fields.push([r.str8(), r.u8()]);
    events.set(typeId, { typeId, name, fields });
  }
  r.done("schema description");
  return { version, entities, events };
}

function entityValue(type, slots) {
  const out = {};
  for (const field of type.fields) {
    out[field.name] = field.value(slots.slice(field.firstSlot, field.firstSlot + field.slotBits.length));
  }
  return out;
}

// -- game events ----------------------------------------------------------------------------

function encodeEventBody(type, fields) {
  const w = new Writer();
  for (const [name, kind] of type.fields) {
    const value = fields[name];
    if (value === undefined) throw new TypeError(`${type.name} needs field ${name}`);
    if (kind === EventFieldKind.INT) w.zigzag(value);
    else if (kind === EventFieldKind.FLOAT) w.f64(value);
    else if (kind === EventFieldKind.BOOL) w.u8(value ? 1 : 0);
    else if (kind === EventFieldKind.STRING) w.str(String(value));
    else if (kind === EventFieldKind.BYTES) { const b = toBytes(value); w.varint(b.length).bytes(b); }
    else throw new TypeError(`${type.name}.${name} has a layout this client cannot write`);
  }
  return w.finish();
}

function decodeEventBody(type, body) {
  const r = new Reader(body);
  const fields = {};
  for (const [name, kind] of type.fields) {
    if (kind === EventFieldKind.INT) fields[name] = r.zigzag();
    else if (kind === EventFieldKind.FLOAT) fields[name] = r.f64();
    else if (kind === EventFieldKind.BOOL) fields[name] = r.u8() !== 0;
    else if (kind === EventFieldKind.STRING) fields[name] = r.str();
    else if (kind === EventFieldKind.BYTES) fields[name] = r.take(r.varint()).slice();
    else throw new ProtocolError(`${type.name}.${name} has a layout this client cannot read`);
  }
  r.done(`${type.name} event`);
  return fields;
}

// -- snapshots (docs/REPLICATION.md "A part, field by field") ------------------------------

class BitReader {
  constructor(bytes, start) {
    this.bytes = bytes;
    this.pos = start * 8;
    this.end = bytes.length * 8;
  }
  bit() {
    if (this.pos >= this.end) throw new ProtocolError("snapshot part truncated");
    const p = this.pos++;
    return (this.bytes[p >> 3] >> (7 - (p & 7))) & 1;
  }
  read(width) {
    if (this.pos + width > this.end) throw new ProtocolError("snapshot part truncated");
    let v = 0;
    for (let i = 0; i < width; i++) v = v * 2 + this.bit();
    return v;
  }
  readEg(k) {
    let zeros = 0;
    while (this.bit() === 0) {
      if (++zeros > 40) throw new ProtocolError("variable-length integer too long");
    }
    const q = 2 ** zeros + this.read(zeros);
    return (q - 1) * 2 ** k + this.read(k);
  }
  checkPadding() {
    const rest = this.end - this.pos;
    if (rest >= 8 || (rest > 0 && this.read(rest) !== 0)) throw new ProtocolError("snapshot part has trailing data");
  }
}

const zigzagDecode = (z) => (z % 2 === 0 ? z / 2 : -(z + 1) / 2);
const SET = 0;
const ADD = 1;
const WRAP = 2;
const FLIP = 3;

function readString(r, field) {
  const n = r.read(field.slotBits[0]);
  if (n > field.maxBytes) throw new ProtocolError(`string of ${n} bytes in ${field.name}`);
  const raw = new Uint8Array(n);
  for (let i = 0; i < n; i++) raw[i] = r.read(8);
  return decodeUtf8(raw);
}

function readFull(r, type) {
  const out = [];
  for (const field of type.fields) {
    if (field.kind === FieldKind.STRING) { out.push(readString(r, field)); continue; }
    for (let i = 0; i < field.slotBits.length; i++) {
      const v = r.read(field.slotBits[i]);
      if (v > field.slotMax[i]) throw new ProtocolError(`${type.name}.${field.name} out of range`);
      out.push(v);
    }
  }
  return out;
}

function readDelta(r, type) {
  const changes = [];
  for (const group of type.groups) {
    if (!r.bit()) continue;
    if (group.kind === GroupKind.DELTA) {
      const n = r.read(group.lengthBits) + 1;
      if (n > group.maxDeltaBits) throw new ProtocolError("delta wider than its field");
      for (const s of group.slots) changes.push([s, type.wrapSlots.has(s) ? WRAP : ADD, zigzagDecode(r.read(n))]);
    } else if (group.kind === GroupKind.QUAT) {
      const [s0, ...small] = group.slots;
      if (r.bit()) {
        const n = r.read(group.lengthBits) + 1;
        if (n > group.maxDeltaBits) throw new ProtocolError("delta wider than its field");
        for (const s of small) changes.push([s, ADD, zigzagDecode(r.read(n))]);
      } else {
        changes.push([s0, SET, r.read(2)]);
        for (const s of small) changes.push([s, SET, r.read(type.slotBits[s])]);
      }
    } else if (group.kind === GroupKind.STRING) {
      changes.push([group.slots[0], SET, readString(r, type.fields[group.fields[0]])]);
    } else if (group.kind === GroupKind.FLIP) {
      changes.push([group.slots[0], FLIP, 0]);
    } else {
      const s = group.slots[0];
      const v = r.read(type.slotBits[s]);
      if (v > type.slotMax[s]) throw new ProtocolError(`${type.name} field out of range`);
      changes.push([s, SET, v]);
    }
  }
  return changes;
}

function decodePart(payload, types, maxEntityId) {
  if (payload.length < 11) throw new ProtocolError("snapshot part too short");
  const h = new Reader(payload);
  const tick = h.u32();
  const epoch = h.u16();
  const partIndex = h.u8();
  const partCount = h.u8();
  const baselineOffset = h.u8();
  const flags = h.u8();
  if (partCount === 0 || partIndex >= partCount) throw new ProtocolError("bad part index");
  if (baselineOffset > tick) throw new ProtocolError("baseline before tick 0");
  if (flags & ~1) throw new ProtocolError("reserved part flags");
  const common = baselineOffset ? tick - baselineOffset : -1;
  const r = new BitReader(payload, 10);
  const removals = [];
  let prev = -1;
  for (let count = r.readEg(0); count > 0; count--) {
    prev += r.readEg(0) + 1;
    if (prev > maxEntityId) throw new ProtocolError(`entity id ${prev} beyond ${maxEntityId}`);
    removals.push(prev);
  }
  const records = [];
  while (r.bit()) {
    const typeId = r.read(8);
    const type = types.get(typeId);
    if (!type) throw new ProtocolError(`unknown entity type ${typeId}`);
    const k = r.read(3);
    const count = r.readEg(0) + 1;
    prev = -1;
    for (let i = 0; i < count; i++) {
      prev += r.readEg(k) + 1;
      if (prev > maxEntityId) throw new ProtocolError(`entity id ${prev} beyond ${maxEntityId}`);
      let base;
      if (!r.bit()) {
        if (common < 0) throw new ProtocolError("record uses a common baseline the part does not name");
        base = common;
      } else if (!r.bit()) {
        records.push({ id: prev, typeId, base: -1, full: readFull(r, type), changes: null });
        continue;
      } else {
        base = tick - r.readEg(0) - 1;
        if (base < 0) throw new ProtocolError("baseline before tick 0");
      }
      records.push({ id: prev, typeId, base, full: null, changes: readDelta(r, type) });
    }
  }
  r.checkPadding();
  return { tick, epoch, partIndex, partCount, flags, removals, records };
}

export class SnapshotDecoder {
  // One topic's entities, built from snapshot parts (netcode/replication/decoder.py): the
  // decoder behind Replica, for decoding parts that arrive some other way. `types` is a
  // description's `entities`; receivePart(part) applies one part (the SNAPSHOT frame's
  // payload after its topic header) or throws ProtocolError and changes nothing;
  // receipt() is what to acknowledge.
  constructor(types, { historyDepth = 32, maxEntities = 4096, maxEntityId = 65535 } = {}) {
    this.types = types;
    this.historyDepth = historyDepth;
    this.maxEntities = maxEntities;
    this.maxEntityId = maxEntityId;
    this.entities = new Map(); // id -> {typeId, type, spawnTick, newest, history: Map tick -> slots}
    this.removed = new Map();
    this.events = [];
    this.newestTick = -1;
    this.epoch = null;
    this.leftEpochs = [];
    this.needsResync = false;
    this.applied = []; // [tick, [part indices]] of the 4 newest ticks
    this.assembly = new Map();
    this.completeTick = -1;
  }

  receipt() {
    if (this.epoch === null) return null;
    const newest = Math.max(0, ...this.applied.map(([t]) => t));
    const parts = [];
    for (let i = this.applied.length - 1; i >= 0; i--) {
      const [tick, indices] = this.applied[i];
      if (newest - tick <= 255) for (const index of indices) parts.push([tick, index]);
    }
    return { epoch: this.epoch, resync: this.needsResync, parts: parts.slice(0, 255), newest };
  }

  receivePart(payload) {
    if (payload.length < 11) throw new ProtocolError("snapshot part too short");
    const epoch = new DataView(payload.buffer, payload.byteOffset).getUint16(4);
    if (epoch !== this.epoch) {
      if (this.leftEpochs.includes(epoch)) return null;
      if (this.epoch !== null) {
        this.leftEpochs.push(this.epoch);
        if (this.leftEpochs.length > 16) this.leftEpochs.shift();
      }
      this.epoch = epoch;
      for (const id of this.entities.keys()) this.events.push(["despawned", id]);
      this.entities.clear();
      this.removed.clear();
      this.applied = [];
      this.assembly.clear();
      this.completeTick = -1;
      this.needsResync = false;
    }
    let part;
    try {
      part = decodePart(payload, this.types, this.maxEntityId);
      this._apply(part);
    } catch (error) {
      this.needsResync = true;
      throw error;
    }
    this._noteApplied(part);
    return part;
  }

  _noteApplied(part) {
    let entry = this.applied.find(([t]) => t === part.tick);
    if (entry) {
      if (!entry[1].includes(part.partIndex)) entry[1].push(part.partIndex);
    } else {
      this.applied.push([part.tick, [part.partIndex]]);
      if (this.applied.length > 4) this.applied.shift();
    }
    let assembly = this.assembly.get(part.tick);
    if (!assembly || assembly.count !== part.partCount) {
      assembly = { count: part.partCount, indices: new Set(), complete: true };
      this.assembly.set(part.tick, assembly);
      if (this.assembly.size > 16) this.assembly.delete(Math.min(...this.assembly.keys()));
    }
    assembly.indices.add(part.partIndex);
    assembly.complete = assembly.complete && (part.flags & 1) === 1;
    if (assembly.complete && assembly.indices.size === assembly.count && part.tick > this.completeTick) {
      this.completeTick = part.tick;
    }
  }

  _apply(part) {
    const tick = part.tick;
    const ents = this.entities;
    const removedNow = [];
    const removalTicks = new Map();
    for (const id of part.removals) {
      const e = ents.get(id);
      if (e && tick >= e.spawnTick) removedNow.push(id);
      removalTicks.set(id, tick);
    }
    const gone = new Set(removedNow);
    const stores = [];
    const seen = new Set();
    let spawned = 0;
    for (const rec of part.records) {
      if (seen.has(rec.id)) throw new ProtocolError(`entity ${rec.id} twice in one part`);
      seen.add(rec.id);
      if (tick <= Math.max(this.removed.get(rec.id) ?? -1, removalTicks.get(rec.id) ?? -1)) continue;
      const type = this.types.get(rec.typeId);
      const e = gone.has(rec.id) ? undefined : ents.get(rec.id);
      if (e && e.typeId !== rec.typeId) throw new ProtocolError(`entity ${rec.id} is a ${e.type.name}`);
      if (rec.full) {
        if (!e) spawned += 1;
        stores.push([rec.id, type, rec.full, !e]);
        continue;
      }
      if (!e) throw new ProtocolError(`delta for entity ${rec.id}, which this client does not hold`);
      const base = e.history.get(rec.base);
      if (!base) {
        if (e.history.size >= this.historyDepth && rec.base < Math.min(...e.history.keys())) continue;
        throw new ProtocolError(`entity ${rec.id}: no baseline at tick ${rec.base}`);
      }
      const next = base.slice();
      for (const [s, op, v] of rec.changes) {
        if (op === ADD) {
          const x = next[s] + v;
          if (x < 0 || x > type.slotMax[s]) throw new ProtocolError(`entity ${rec.id}: delta leaves the field's range`);
          next[s] = x;
        } else if (op === WRAP) {
          const size = type.slotMax[s] + 1;
          next[s] = (((next[s] + v) % size) + size) % size;
        } else if (op === FLIP) {
          next[s] = 1 - next[s];
        } else {
          next[s] = v;
        }
      }
      stores.push([rec.id, type, next, false]);
    }
    if (spawned && ents.size - removedNow.length + spawned > this.maxEntities) {
      throw new ProtocolError(`more than ${this.maxEntities} entities`);
    }
    for (const [id, t] of removalTicks) if (t > (this.removed.get(id) ?? -1)) this.removed.set(id, t);
    for (const id of removedNow) {
      ents.delete(id);
      this.events.push(["despawned", id]);
    }
    for (const [id, type, slots, isNew] of stores) {
      if (isNew) {
        ents.set(id, { typeId: type.typeId, type, spawnTick: tick, newest: tick, history: new Map([[tick, slots]]) });
        this.events.push(["spawned", id]);
        continue;
      }
      const e = ents.get(id);
      e.history.set(tick, slots);
      if (e.history.size > this.historyDepth) e.history.delete(Math.min(...e.history.keys()));
      if (tick > e.newest) e.newest = tick;
      else if (tick < e.spawnTick) e.spawnTick = tick;
    }
    if (tick > this.newestTick) this.newestTick = tick;
  }
}

// -- interpolation (netcode/replication/interpolation.py) ------------------------------------

function lerpAngle(a, b, t) {
  const tau = 2 * Math.PI;
  const d = ((((b - a + Math.PI) % tau) + tau) % tau) - Math.PI;
  return ((((a + d * t + Math.PI) % tau) + tau) % tau) - Math.PI;
}

function lerpEntity(type, a, b, t) {
  const out = {};
  for (const field of type.fields) {
    const va = a[field.name];
    const vb = b[field.name];
    if (field.kind === FieldKind.FLOAT) out[field.name] = Math.min(Math.max(va + (vb - va) * t, field.lo), field.hi);
    else if (field.kind === FieldKind.ANGLE) out[field.name] = lerpAngle(va, vb, t);
    else if (field.kind === FieldKind.QUAT) {
      const tt = Math.min(t, 1);
      const sign = va.reduce((acc, x, i) => acc + x * vb[i], 0) < 0 ? -1 : 1;
      const q = va.map((x, i) => x + (sign * vb[i] - x) * tt);
      const norm = Math.hypot(...q) || 1;
      out[field.name] = q.map((x) => x / norm);
    } else out[field.name] = t >= 1 ? vb : va;
  }
  return out;
}

function sample(type, history, tick, maxExtrapolationTicks, knownUntil) {
  // history: [[tick, slots]] oldest first
  const value = (slots) => entityValue(type, slots);
  const first = history[0][0];
  if (tick <= first || history.length === 1) return value(tick <= first ? history[0][1] : history[history.length - 1][1]);
  let i = history.findIndex(([t]) => t >= tick);
  if (i > 0) {
    const [t0, s0] = history[i - 1];
    const [t1, s1] = history[i];
    return lerpEntity(type, value(s0), value(s1), (tick - t0) / (t1 - t0));
  }
  const [t0, s0] = history[history.length - 2];
  const [t1, s1] = history[history.length - 1];
  if (knownUntil > t1) return value(s1);
  const m = maxExtrapolationTicks;
  let ahead = tick - t1;
  ahead = ahead <= m ? ahead : Math.max(0, 2 * m - ahead);
  if (ahead <= 0) return value(s1);
  return lerpEntity(type, value(s0), value(s1), 1 + ahead / (t1 - t0));
}

class ServerClock {
  // The server's clock as the client sees it: slews at most 5% towards each measurement,
  // snaps past 250 ms of error (netcode/replication/clock.py).
  constructor() { this.offset = null; this.target = null; this.lastLocal = null; }
  update(localNow, measured) {
    if (measured === null) return;
    this._advance(localNow);
    this.target = measured;
    if (this.offset === null || Math.abs(measured - this.offset) > 0.25) {
      this.offset = measured;
      this.lastLocal = localNow;
    }
  }
  _advance(localNow) {
    if (this.offset === null || this.target === null || this.lastLocal === null) return;
    const elapsed = Math.max(localNow - this.lastLocal, 0);
    this.lastLocal = localNow;
    const step = 0.05 * elapsed;
    this.offset += Math.max(-step, Math.min(step, this.target - this.offset));
  }
  serverTime(localNow) {
    this._advance(localNow);
    return this.offset === null ? null : localNow + this.offset;
  }
}

// -- rooms ----------------------------------------------------------------------------------

function readParticipant(r) {
  return { pid: r.u16(), identity: r.str(), name: r.str(), metadata: r.str() };
}

function readTrack(r) {
  const track = { pid: r.u16(), sid: r.u16(), name: r.str(), ordered: r.flag() };
  if (r.flag()) track.maxPacketLifeTime = r.u16();
  if (r.flag()) track.maxRetransmits = r.u16();
  return track;
}

function decodeServerMessage(data) {
  const r = new Reader(data);
  const kind = r.u8();
  let body;
  switch (kind) {
    case Kind.JOINED: {
      body = { pid: r.u16(), room: r.str(), participants: [], tracks: [] };
      for (let n = r.varint(); n > 0; n--) body.participants.push(readParticipant(r));
      for (let n = r.varint(); n > 0; n--) body.tracks.push(readTrack(r));
      body.session = r.str();
      body.resumeSecret = r.str();
      body.graceMs = r.u32();
      body.deadAfterMs = r.u32();
      body.messageBytesPerS = r.u32();
      break;
    }
    case Kind.PARTICIPANT_JOINED: body = readParticipant(r); break;
    case Kind.PARTICIPANT_LEFT:
    case Kind.PARTICIPANT_RECONNECTING:
    case Kind.PARTICIPANT_RECONNECTED: body = { pid: r.u16() }; break;
    case Kind.TOPIC: body = { topicId: r.u16(), name: r.str() }; break;
    case Kind.DATA: {
      body = { pid: r.u16(), topicId: r.u16(), text: r.flag(), destinations: [] };
      for (let n = r.varint(); n > 0; n--) body.destinations.push(r.u16());
      body.payload = r.rest().slice();
      break;
    }
    case Kind.TRACK_ACCEPTED: body = { requestId: r.u16(), sid: r.u16() }; break;
    case Kind.TRACK_REFUSED: body = { requestId: r.u16(), reason: r.str() }; break;
    case Kind.TRACK_PUBLISHED: body = readTrack(r); break;
    case Kind.TRACK_UNPUBLISHED: body = { pid: r.u16(), sid: r.u16() }; break;
    case Kind.ERROR: body = { code: r.str(), message: r.str() }; break;
    case Kind.EXTENSION: body = { channel: r.u8(), pid: r.u16(), body: r.rest().slice() }; break;
    case Kind.ACK:
    case Kind.RESUMED: body = { received: r.u64() }; break;
    default: throw new ProtocolError(`message kind ${kind} is not expected from the server`);
  }
  r.done(`message kind ${kind}`);
  return [kind, body];
}

export const DataPacketKind = Object.freeze({ RELIABLE: "reliable", LOSSY: "lossy" });

export class LocalParticipant {
  constructor(room) {
    this._room = room;
    this.identity = "";
    this.name = "";
    this.metadata = "";
    this.pid = 0;
    this.sid = "";
  }

  // Send a data packet to the room, or to the identities named (a list, or one identity as a
  // string). Reliable packets (at most 15 KiB) arrive complete and in order; lossy ones fast
  // or not at all. A string arrives as a string, bytes as bytes.
  async publishData(payload, { reliable = true, topic = "", destinationIdentities = [] } = {}) {
    this._room._publishData(payload, reliable, topic, destinationIdentities);
  }
}

export class Room extends Emitter {
  // A room on a netcode server, as one browser client sees it.
  //
  // Events: connected(), disconnected(reason), reconnecting(), reconnected(),
  // participantConnected(participant), participantDisconnected(participant),
  // participantReconnecting(participant), participantReconnected(participant),
  // dataReceived(packet {data, participant, topic, kind}), eventReceived(event {type, typeId,
  // fields}, participant, topic), schemaReceived(description), hello({tickRate, epoch}).
  // A participant is {identity, name, metadata, pid, sid}; null stands for the server.
  constructor() {
    super();
    this.name = "";
    this.state = "disconnected";
    this.localParticipant = new LocalParticipant(this);
    this.remoteParticipants = new Map(); // identity -> participant
    this._byPid = new Map();
    this.deadAfter = 3.0;
    this.gracePeriod = 20.0;
    this.autoReconnect = true;
    this.reconnects = 0;
    this.protocolErrors = 0;
    // topiced packets and snapshots that arrived outside our subscription and were dropped
    // (until a SUBSCRIBE reaches it, the server forwards by the one it last heard of)
    this.unsubscribedDropped = 0;
    this._subscriptions = null; // null: every topic
    this.description = null; // the game host's schema description, once received
    this.eventTypes = new Map(BUILTIN_EVENTS.map((t) => [t.typeId, t]));
    this.tickRate = null;
    this.tickEpoch = null;
    this._hub = new SnapshotHub(this);
    this._eventHandlers = new Map();
    this._reset();
  }

  _reset() {
    this.endpoint = new Endpoint();
    this.events = new EventChannel(this.endpoint, (id, message) => {
      const body = new Writer(message.length + 2).u16(id).bytes(message).finish();
      this._sendExtension(ExtensionChannel.EVENTS, body);
    });
    this._topicsOut = new Map(); // reliable and lossy topic ids we bound: name -> id
    this._topicsConfirmed = new Set();
    this._topicsAnnounced = new Set();
    this._topicsIn = new Map([[0, ""]]);
    this._eventTopicsOut = new Map();
    this._eventTopicsIn = new Map([[0, ""]]);
    this._received = 0; // counted messages from the server
    this._acked = 0;
    this._sentLog = []; // counted messages the server has not confirmed
    this._sentConfirmed = 0;
    this._ackTimer = null;
    this._session = null;
    this._episode = 0;
    this._disconnectReason = "";
  }

  // -- connecting -----------------------------------------------------------------------

  // Join the room the token names. options: room (must be the token's), topics (receive
  // only these; default all), iceServers, timeout (seconds), autoReconnect (true).
  async connect(url, token, { room = "", topics = null, iceServers = [], timeout = 10, autoReconnect = true } = {}) {
    if (this.state !== "disconnected") throw new NetcodeError(`room is ${this.state}`);
    this._setState("connecting");
    this._reset();
    this._url = url.replace(/\/+$/, "");
    this._roomName = room;
    this._iceServers = iceServers;
    this.autoReconnect = autoReconnect;
    let link;
    try {
      link = await withTimeout(this._openLink({ token, room }), timeout * 1000, `no answer from ${url}`);
      const joined = new Promise((resolve, reject) => { this._joined = { resolve, reject }; });
      this._adopt(link);
      this._subscriptions = null; // a new session forwards every topic until told otherwise
      if (topics !== null) this.setSubscriptions(topics);
      await withTimeout(joined, timeout * 1000, "the server did not say JOINED");
    } catch (error) {
      this._closeLink();
      this._setState("disconnected");
      throw error;
    }
    this._pump = setInterval(() => this._tick(), PUMP_INTERVAL_MS);
    this._setState("connected");
    this.emit("connected");
  }

  // Leave the room: the server ends the session at once.
  async disconnect() {
    if (this.state === "disconnected") return;
    this._disconnectReason = this._disconnectReason || "client_initiated";
    if (this.state === "connected") {
      // the server closes the link when LEAVE arrives (without it, it would hold the session)
      const closed = new Promise((resolve) => this.once("disconnected", resolve));
      try { this._send(new Uint8Array([Kind.LEAVE])); } catch { /* closing anyway */ }
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1000))]);
    }
    this._finish(this._disconnectReason);
  }

  _finish(reason) {
    if (this.state === "disconnected") return;
    clearInterval(this._pump);
    clearTimeout(this._ackTimer);
    this._closeLink();
    this.remoteParticipants.clear();
    this._byPid.clear();
    this._setState("disconnected");
    this.emit("disconnected", reason);
  }

  async _openLink({ token = "", room = "", resume = null }) {
    const pc = new RTCPeerConnection({ iceServers: this._iceServers });
    const reliable = pc.createDataChannel("reliable", { negotiated: true, id: 0, ordered: true });
    const lossy = pc.createDataChannel("lossy", { negotiated: true, id: 1, ordered: false, maxRetransmits: 0 });
    reliable.binaryType = lossy.binaryType = "arraybuffer";
    const link = { pc, reliable, lossy, pending: [], onReliable: null, onLossy: null, closed: false };
    reliable.onmessage = (e) => (link.onReliable ? link.onReliable(e.data) : link.pending.push(e.data));
    lossy.onmessage = (e) => link.onLossy && link.onLossy(e.data);
    pc.ondatachannel = (e) => e.channel.close(); // data tracks are not supported here
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, 3000);
      const request = { sdp: pc.localDescription.sdp, type: "offer", token };
      if (room) request.room = room;
      if (resume) request.resume = resume;
      const response = await fetch(`${this._url}/rtc/connect`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
      let reply = null;
      try { reply = await response.json(); } catch { /* not JSON */ }
      if (!response.ok || !reply || reply.type !== "answer") {
        const code = (reply && reply.error) || `http_${response.status}`;
        throw new ConnectError(`the server refused: ${code}: ${(reply && reply.message) || response.statusText}`, code);
      }
      link.serverInfo = reply;
      if (reply.room_type === "p2p") {
        // the server would relay nothing: every pair of participants needs its own link
        throw new ConnectError("netcode.js does not join peer-to-peer rooms", "p2p_unsupported");
      }
      await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
      await Promise.all([channelOpen(reliable), channelOpen(lossy)]);
    } catch (error) {
      pc.close();
      throw error;
    }
    return link;
  }

  _adopt(link) {
    this._link = link;
    link.onLossy = (data) => this._onDatagram(data);
    link.pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(link.pc.connectionState) && link === this._link) this._linkLost(`connection ${link.pc.connectionState}`);
    };
    link.reliable.onclose = () => { if (link === this._link) this._linkLost("the reliable channel closed"); };
    const info = link.serverInfo;
    Object.assign(this.localParticipant, { identity: info.identity || "", name: info.name || "", metadata: info.metadata || "" });
    link.onReliable = (data) => this._onReliable(data);
    for (const data of link.pending.splice(0)) this._onReliable(data);
  }

  _closeLink() {
    const link = this._link;
    this._link = null;
    if (link) {
      link.closed = true;
      link.onReliable = link.onLossy = null;
      link.pc.onconnectionstatechange = null;
      link.pc.close();
    }
  }

  _setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.emit("connectionStateChanged", state);
    }
  }

  // -- resuming after a drop (docs/PROTOCOL.md "Sessions and resume") --------------------

  _linkLost(why) {
    if (this.state !== "connected") return;
    if (!this.autoReconnect || !this._session || this._disconnectReason) {
      // the server ended the session (it said why in an ERROR), or no resuming
      this._finish(this._disconnectReason || "connection_lost");
      return;
    }
    console.info(`netcode: link lost (${why}); resuming the session`);
    this._setState("reconnecting");
    this._closeLink();
    this.emit("reconnecting");
    this._resume();
  }

  async _resume() {
    const deadline = nowSeconds() + this.deadAfter + this.gracePeriod;
    let spacing = 0.1;
    this._episode += 1;
    while (this.state === "reconnecting" && nowSeconds() < deadline) {
      try {
        const resume = { ...this._session, received: this._received, episode: this._episode };
        const link = await withTimeout(this._openLink({ resume }), 5000, "resume attempt timed out");
        const first = link.pending.length
          ? link.pending.shift()
          : await new Promise((resolve) => {
            // the first message only: the ones after it wait in `pending` for _adopt
            link.onReliable = (data) => { link.onReliable = null; resolve(data); };
          });
        const [kind, body] = decodeServerMessage(toBytes(first));
        if (kind === Kind.ERROR) throw new ConnectError(body.message, body.code);
        if (kind !== Kind.RESUMED) throw new ConnectError(`message kind ${kind} before RESUMED`);
        if (this.state !== "reconnecting") { link.pc.close(); return; }
        const skip = body.received - this._sentConfirmed;
        if (skip < 0 || skip > this._sentLog.length) throw new ConnectError("the server confirms messages never sent");
        this._sentLog.splice(0, skip);
        this._sentConfirmed = body.received;
        link.onReliable = null;
        this._adopt(link);
        for (const message of this._sentLog) link.reliable.send(message);
        this.endpoint.lastReceivedAt = nowSeconds();
        this.reconnects += 1;
        this._setState("connected");
        this.emit("reconnected");
        return;
      } catch (error) {
        if (["session_expired", "server_restarted", "node_lost"].includes(error.code)) {
          this._finishResume(error.code);
          return;
        }
        this._episode += 1;
        await new Promise((resolve) => setTimeout(resolve, spacing * (500 + Math.random() * 1000)));
        spacing = Math.min(spacing * 2, 2);
      }
    }
    this._finishResume("server_unreachable");
  }

  _finishResume(reason) {
    if (this.state === "reconnecting") this._finish(reason);
  }

  // -- sending --------------------------------------------------------------------------

  _send(message) {
    // A counted message: kept until the server confirms it (replayed after a resume).
    if (this.state === "disconnected" && !this._link) throw new DisconnectedError("room is not connected");
    this._sentLog.push(message);
    if (this._link && this.state !== "reconnecting") this._link.reliable.send(message);
  }

  _sendExtension(channel, body) {
    this._send(new Writer(body.length + 4).u8(Kind.EXTENSION).u8(channel).u16(0).bytes(body).finish());
  }

  _sendAck() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (!this._link || this.state === "reconnecting") return;
    this._acked = this._received;
    this._link.reliable.send(new Writer(9).u8(Kind.ACK).u64(this._received).finish());
  }

  _subscribeMessage(topics) {
    const w = new Writer().u8(Kind.SUBSCRIBE).u8(topics === null ? 1 : 0);
    const list = topics || [];
    w.varint(list.length);
    for (const topic of list) w.str(topic);
    return w.finish();
  }

  // Receive only these topics (null: every topic). Untopiced packets always arrive.
  setSubscriptions(topics) {
    this._subscriptions = topics === null ? null : new Set(topics);
    this._send(this._subscribeMessage(topics));
  }

  // Whether packets of `topic` reach this client (untopiced ones always do).
  subscribesTo(topic) {
    return !topic || this._subscriptions === null || this._subscriptions.has(topic);
  }

  // True, counted in unsubscribedDropped, if a packet or snapshot of `topic` is outside the
  // subscription (the room's receivers drop it then).
  _dropUnsubscribed(topic) {
    if (this.subscribesTo(topic)) return false;
    this.unsubscribedDropped++;
    return true;
  }

  _requireConnected() {
    if (this.state === "disconnected" || this.state === "connecting") throw new DisconnectedError("room is not connected");
  }

  _destinationPids(identities) {
    const named = typeof identities === "string" ? [identities] : [...identities];
    const pids = named.map((i) => this.remoteParticipants.get(i)).filter(Boolean).map((p) => p.pid);
    return named.length && !pids.length ? null : pids;
  }

  _bindTopic(topic) {
    if (!topic) return [0, false];
    let id = this._topicsOut.get(topic);
    if (id !== undefined) return [id, false];
    if (this._topicsOut.size >= 1024) throw new RangeError("more than 1024 topics");
    id = this._topicsOut.size + 1;
    this._topicsOut.set(topic, id);
    return [id, true];
  }

  _publishData(payload, reliable, topic, destinationIdentities) {
    this._requireConnected();
    const text = typeof payload === "string";
    const data = text ? utf8.encode(payload) : toBytes(payload);
    if (utf8.encode(topic).length > 255) throw new RangeError("topic over 255 bytes");
    const destinations = this._destinationPids(destinationIdentities);
    if (destinations === null) return; // only identities not in the room: nobody
    if (reliable) {
      if (data.length > MAX_RELIABLE_PAYLOAD_BYTES) throw new RangeError(`reliable payload of ${data.length} bytes is over 15 KiB`);
      const [topicId] = this._bindTopic(topic);
      if (topicId && !this._topicsAnnounced.has(topicId)) {
        // a lossy packet may have bound the id first: TOPIC binds it on this ordered channel
        this._topicsAnnounced.add(topicId);
        this._send(new Writer().u8(Kind.TOPIC).u16(topicId).str(topic).finish());
      }
      const w = new Writer(data.length + 16).u8(Kind.DATA).u16(0).u16(topicId).u8(text ? 1 : 0);
      w.varint(destinations.length);
      for (const pid of destinations) w.u16(pid);
      this._send(w.bytes(data).finish());
      return;
    }
    if (data.length > MAX_LOSSY_PAYLOAD_BYTES) throw new RangeError(`lossy payload of ${data.length} bytes is over 8 KiB`);
    if (destinations.length > 255) throw new RangeError("at most 255 destinations");
    const [topicId] = this._bindTopic(topic);
    const inline = topicId !== 0 && !this._topicsConfirmed.has(topicId);
    const w = new Writer(data.length + 16).u16(topicId).u8((text ? FLAG_TEXT : 0) | (inline ? FLAG_TOPIC_NAME : 0));
    if (inline) w.str8(topic);
    w.u8(destinations.length);
    for (const pid of destinations) w.u16(pid);
    w.bytes(data);
    const now = nowSeconds();
    this.endpoint.sendFrame(FrameType.DATA, w.finish(), {
      onDelivery: inline ? (acked) => acked && this._topicsConfirmed.add(topicId) : null,
      expiresAt: now + LOSSY_DATA_MAX_AGE_S,
    });
    this._schedule();
  }

  // Send a game event (delivered once and in order, quickly even under loss). `type` is the
  // event type's name ("Chat") or id; `fields` its fields by name.
  sendEvent(type, fields, { topic = "", destinationIdentities = [] } = {}) {
    this._requireConnected();
    const eventType = this._eventType(type);
    const destinations = this._destinationPids(destinationIdentities);
    if (destinations === null) return;
    const w = new Writer().u8(eventType.typeId);
    let topicId = 0;
    let name = null;
    if (topic) {
      topicId = this._eventTopicsOut.get(topic);
      if (topicId === undefined) {
        topicId = this._eventTopicsOut.size + 1;
        this._eventTopicsOut.set(topic, topicId);
        name = topic;
      }
    }
    w.u16(topicId);
    if (name !== null) w.str8(name);
    w.u8(destinations.length);
    for (const pid of destinations) w.u16(pid);
    w.bytes(encodeEventBody(eventType, fields));
    this.events.send(w.finish());
    this._schedule();
  }

  // Call handler(event, participant, topic) for each event of a type (name or id).
  onEvent(type, handler) {
    const key = String(type);
    if (!this._eventHandlers.has(key)) this._eventHandlers.set(key, []);
    this._eventHandlers.get(key).push(handler);
    return this;
  }

  _eventType(type) {
    if (typeof type === "number") {
      const found = this.eventTypes.get(type);
      if (found) return found;
    } else {
      for (const t of this.eventTypes.values()) if (t.name === type) return t;
    }
    throw new TypeError(`unknown event type ${type}`);
  }

  // -- the lossy channel ---------------------------------------------------------------

  sendFrame(type, payload, options = {}) {
    this._requireConnected();
    this.endpoint.sendFrame(type, payload, options);
    this._schedule();
  }

  _schedule() {
    if (this._scheduled) return;
    this._scheduled = true;
    setTimeout(() => { this._scheduled = false; this._tick(); }, 0);
  }

  _tick() {
    const now = nowSeconds();
    if (this.state !== "connected") return;
    // A page whose timers were held back (a busy main thread, a throttled tab) may have
    // datagrams waiting in its event queue: judge the link only when this runs on time.
    const punctual = this._lastTickAt !== undefined && now - this._lastTickAt < 0.5;
    this._lastTickAt = now;
    const last = this.endpoint.lastReceivedAt;
    if (punctual && last !== null && now - last > this.deadAfter) {
      this._linkLost(`no datagram from the server for ${(now - last).toFixed(1)} s`);
      return;
    }
    this._hub.flushReceipts();
    this.endpoint.handleTimer(now);
    this.events.flush(now);
    const lossy = this._link.lossy;
    for (const datagram of this.endpoint.datagramsToSend(now)) {
      if (lossy.readyState !== "open") break;
      if (lossy.bufferedAmount > LOSSY_BACKLOG_LIMIT_BYTES) continue; // stale by the time it left
      lossy.send(datagram);
    }
  }

  // -- receiving ------------------------------------------------------------------------

  _protocolError(error) {
    this.protocolErrors += 1;
    console.warn(`netcode: malformed message from the server: ${error.message}`);
  }

  _onReliable(data) {
    if (typeof data === "string") { this._protocolError(new ProtocolError("text on the reliable channel")); return; }
    const bytes = toBytes(data);
    if (bytes.length && !UNCOUNTED.has(bytes[0])) {
      this._received += 1;
      if (this._received - this._acked >= ACK_EVERY) this._sendAck();
      else if (this._ackTimer === null) this._ackTimer = setTimeout(() => this._sendAck(), ACK_DELAY_S * 1000);
    }
    let kind;
    let body;
    try {
      [kind, body] = decodeServerMessage(bytes);
      this._dispatch(kind, body);
    } catch (error) {
      if (!(error instanceof NetcodeError)) throw error;
      this._protocolError(error);
    }
  }

  _dispatch(kind, body) {
    switch (kind) {
      case Kind.JOINED: {
        Object.assign(this.localParticipant, { pid: body.pid, sid: `PA_${body.pid}` });
        this.name = body.room;
        this._session = { session: body.session, secret: body.resumeSecret };
        this.gracePeriod = body.graceMs / 1000;
        this.deadAfter = Math.max(body.deadAfterMs / 1000, 0.5);
        for (const p of body.participants) this._addParticipant(p);
        if (this._joined) this._joined.resolve();
        break;
      }
      case Kind.PARTICIPANT_JOINED: this.emit("participantConnected", this._addParticipant(body)); break;
      case Kind.PARTICIPANT_LEFT: {
        const p = this._byPid.get(body.pid);
        if (!p) break;
        this._byPid.delete(body.pid);
        this.remoteParticipants.delete(p.identity);
        this.emit("participantDisconnected", p);
        break;
      }
      case Kind.PARTICIPANT_RECONNECTING:
      case Kind.PARTICIPANT_RECONNECTED: {
        const p = this._byPid.get(body.pid);
        if (!p) break;
        p.reconnecting = kind === Kind.PARTICIPANT_RECONNECTING;
        this.emit(p.reconnecting ? "participantReconnecting" : "participantReconnected", p);
        break;
      }
      case Kind.TOPIC: this._learnTopic(body.topicId, body.name); break;
      case Kind.DATA: this._deliver(body.pid, this._resolveTopic(body.topicId), body.text, body.payload, DataPacketKind.RELIABLE); break;
      case Kind.ERROR: {
        // the server may close the link next: then the room ends with this reason
        console.warn(`netcode: the server says ${body.code}: ${body.message}`);
        this.errorMessage = body.message;
        this._disconnectReason = body.code;
        if (this._joined && this.state === "connecting") this._joined.reject(new ConnectError(`${body.code}: ${body.message}`, body.code));
        this.emit("error", { code: body.code, message: body.message });
        break;
      }
      case Kind.EXTENSION: {
        if (body.channel === ExtensionChannel.EVENTS) {
          if (body.body.length < 2) throw new ProtocolError("fallback event shorter than its id");
          this.events.receiveFallback((body.body[0] << 8) | body.body[1], body.body.slice(2));
          this._dispatchEvents();
        } else if (body.channel === ExtensionChannel.HOST) {
          this._onHello(body.body);
        } else if (body.channel === ExtensionChannel.HOST_ENTITY) {
          this._hub.onOwnEntity(body.pid, body.body);
        }
        break;
      }
      case Kind.ACK: {
        const confirmed = body.received - this._sentConfirmed;
        if (confirmed > 0 && confirmed <= this._sentLog.length) {
          this._sentLog.splice(0, confirmed);
          this._sentConfirmed = body.received;
        }
        break;
      }
      case Kind.RESUMED: throw new ProtocolError("RESUMED outside a resume");
      default: break; // track messages: data tracks are not supported by this client
    }
  }

  _onHello(body) {
    const r = new Reader(body);
    this.tickRate = r.f64();
    this.tickEpoch = r.f64();
    r.u32();
    if (!(this.tickRate > 0 && this.tickRate <= 1000)) throw new ProtocolError("impossible tick rate");
    // acknowledgements may wait a little over a tick for a datagram to ride on
    this.endpoint.maxAckDelay = Math.max(0.01, 1.2 / this.tickRate);
    if (r.remaining) {
      const description = decodeDescription(r.rest());
      this.description = description;
      for (const [id, type] of description.events) this.eventTypes.set(id, type);
      this.emit("schemaReceived", description);
    }
    this.emit("hello", { tickRate: this.tickRate, epoch: this.tickEpoch });
  }

  _addParticipant(wire) {
    const p = { identity: wire.identity, name: wire.name, metadata: wire.metadata, pid: wire.pid, sid: `PA_${wire.pid}`, reconnecting: false };
    this._byPid.set(wire.pid, p);
    this.remoteParticipants.set(wire.identity, p);
    return p;
  }

  participantByPid(pid) { return this._byPid.get(pid) || null; }

  _learnTopic(topicId, name) {
    const known = this._topicsIn.get(topicId);
    if (known === name) return;
    if (topicId === 0 || known !== undefined) throw new ProtocolError(`topic id ${topicId} rebound`);
    if (this._topicsIn.size > 1024) throw new ProtocolError("too many topics");
    this._topicsIn.set(topicId, name);
  }

  _resolveTopic(topicId, inline = null) {
    if (inline !== null) this._learnTopic(topicId, inline);
    const name = this._topicsIn.get(topicId);
    if (name === undefined) throw new ProtocolError(`topic id ${topicId} was never bound`);
    return name;
  }

  _deliver(pid, topic, text, payload, kind) {
    const participant = pid ? this._byPid.get(pid) : null;
    if (pid && !participant) return; // from someone who already left
    if (this._dropUnsubscribed(topic)) return;
    const data = text ? decodeUtf8(payload) : payload;
    this.emit("dataReceived", { data, participant, topic, kind });
  }

  _onDatagram(data) {
    if (typeof data === "string") return;
    const now = nowSeconds();
    const frames = this.endpoint.receiveDatagram(toBytes(data), now);
    if (frames === null) return;
    for (const [type, payload] of frames) {
      try {
        if (type === FrameType.DATA) {
          const r = new Reader(payload);
          const pid = r.u16();
          const topicId = r.u16();
          const flags = r.u8();
          if (flags & ~(FLAG_TEXT | FLAG_TOPIC_NAME)) throw new ProtocolError("unknown DATA flags");
          const inline = flags & FLAG_TOPIC_NAME ? r.str8() : null;
          this._deliver(pid, this._resolveTopic(topicId, inline), !!(flags & FLAG_TEXT), r.rest().slice(), DataPacketKind.LOSSY);
        } else if (type === FrameType.EVENT) {
          this.events.receiveFrame(payload);
          this._dispatchEvents();
        } else if (type === FrameType.SNAPSHOT) {
          this._hub.onSnapshot(payload);
        } else if (type === FrameType.INPUT_ACK) {
          this._hub.onInputAck(payload);
        }
      } catch (error) {
        if (!(error instanceof NetcodeError)) throw error;
        this._protocolError(error);
      }
    }
  }

  _dispatchEvents() {
    for (const message of this.events.delivered.splice(0)) {
      try {
        const r = new Reader(message);
        const typeId = r.u8();
        const pid = r.u16();
        const topicId = r.u16();
        let topic = this._eventTopicsIn.get(topicId);
        if (topic === undefined) {
          if (topicId !== this._eventTopicsIn.size) throw new ProtocolError(`event names unknown topic id ${topicId}`);
          topic = r.str8();
          this._eventTopicsIn.set(topicId, topic);
        }
        const type = this.eventTypes.get(typeId);
        if (!type) throw new ProtocolError(`unknown event type ${typeId}`);
        const event = { type: type.name, typeId, fields: decodeEventBody(type, r.rest()) };
        const participant = pid ? this._byPid.get(pid) : null;
        if (pid && !participant) continue;
        for (const key of [type.name, String(typeId)]) {
          for (const handler of this._eventHandlers.get(key) || []) {
            try { handler(event, participant, topic); } catch (error) { console.error("netcode: event handler failed", error); }
          }
        }
        this.emit("eventReceived", event, participant, topic);
      } catch (error) {
        if (!(error instanceof NetcodeError)) throw error;
        this._protocolError(error);
      }
    }
  }

  // Statistics of the lossy channel: rttMs (smoothed, acknowledgement delays included),
  // pingMs (the shortest PING round trip of the last 8, without the peer's hold time).
  stats() {
    const e = this.endpoint;
    const ping = e.clockSamples.length ? Math.min(...e.clockSamples.map(([rtt]) => rtt)) : null;
    return {
      rttMs: e.srtt === null ? null : e.srtt * 1000,
      jitterMs: e.rttvar * 1000,
      pingMs: ping === null ? null : ping * 1000,
      clockOffset: e.clockOffset,
      ...e.stats,
    };
  }
}

// -- replication: the hub decodes every snapshot topic, a Replica shows one -----------------

class SnapshotHub {
  constructor(room) {
    this.room = room;
    this.decoders = new Map(); // topic -> SnapshotDecoder
    this.replicas = new Map();
    this.topicIds = new Map();
    this.receiptsDue = new Set();
    this.inputAcks = new Map();
    this.options = new Map(); // topic -> decoder options set by a Replica
    this.ownEntities = new Map(); // topic -> the entity the game host assigned to us
  }

  onOwnEntity(senderPid, body) {
    // HOST_ENTITY: flags u8 (bit 0: an entity), entity_id u32, the topic's name (to the end)
    if (senderPid !== 0 || body.length < 6) throw new ProtocolError("bad HOST_ENTITY");
    const r = new Reader(body);
    const flags = r.u8();
    const id = r.u32();
    if (flags & ~1) throw new ProtocolError("HOST_ENTITY with unknown flags");
    const topic = decodeUtf8(r.rest());
    const entityId = flags & 1 ? id : null;
    this.ownEntities.set(topic, entityId);
    this.replicas.get(topic)?.emit("ownEntity", entityId);
  }

  decoder(topic) {
    let decoder = this.decoders.get(topic);
    if (!decoder && this.room.description) {
      decoder = new SnapshotDecoder(this.room.description.entities, this.options.get(topic));
      this.decoders.set(topic, decoder);
    }
    return decoder || null;
  }

  onSnapshot(payload) {
    const r = new Reader(payload);
    r.u16(); // the sender: always the server
    const topicId = r.u16();
    const flags = r.u8();
    if (flags & ~(FLAG_TEXT | FLAG_TOPIC_NAME)) throw new ProtocolError("unknown SNAPSHOT flags");
    const inline = flags & FLAG_TOPIC_NAME ? r.str8() : null;
    const topic = this.room._resolveTopic(topicId, inline);
    if (this.room._dropUnsubscribed(topic)) return;
    const decoder = this.decoder(topic);
    if (!decoder) return; // no schema description yet: drop it unread (it is sent again)
    this.topicIds.set(topic, topicId);
    let part;
    try {
      part = decoder.receivePart(r.rest());
    } finally {
      this.receiptsDue.add(topic);
      this.room._schedule();
    }
    const replica = this.replicas.get(topic);
    if (part && replica) replica._onPart(part);
    else if (!replica) decoder.events.length = 0;
  }

  flushReceipts() {
    for (const topic of this.receiptsDue) {
      const receipt = this.decoders.get(topic)?.receipt();
      if (!receipt) continue;
      const w = new Writer(32).u16(this.topicIds.get(topic)).u16(receipt.epoch).u8(receipt.resync ? 1 : 0);
      const decoder = this.decoders.get(topic);
      w.u16(Math.min(decoder.maxEntities, 0xffff)).u16(Math.min(decoder.maxEntityId, 0xffff)).u8(decoder.historyDepth);
      w.u32(receipt.newest).u8(receipt.parts.length);
      for (const [tick, index] of receipt.parts) w.u8(receipt.newest - tick).u8(index);
      this.room.endpoint.sendFrame(FrameType.RECEIPT, w.finish(), { key: `receipt:${topic}` });
    }
    this.receiptsDue.clear();
  }

  onInputAck(payload) {
    if (payload.length !== 8) throw new ProtocolError("INPUT_ACK size");
    const r = new Reader(payload);
    const tick = r.u32();
    const last = r.u32();
    this.inputAcks.set(tick, last === 0xffffffff ? null : last);
    if (this.inputAcks.size > 256) this.inputAcks.delete(this.inputAcks.keys().next().value);
    if (last !== 0xffffffff) for (const replica of this.replicas.values()) replica._inputsAcknowledged(last);
  }
}

export class Replica extends Emitter {
  // The entities a game host replicates on one topic, as this client sees them.
  //
  // Events: spawned(id, entity), despawned(id), snapshot(tick), ownEntity(id or null). An
  // entity is a plain object of its fields plus `type` (the type's name) and `typeId`.
  constructor(room, { topic = "position", interpolationDelay = 0.1, maxExtrapolation = 0.1, maxEntities = null, inputRedundancy = 8 } = {}) {
    super();
    this.room = room;
    this.topic = topic;
    this.interpolationDelay = interpolationDelay;
    this.maxExtrapolation = maxExtrapolation;
    this.inputRedundancy = inputRedundancy;
    this.latestTick = null;
    this.snapshotsReceived = 0;
    this.clock = new ServerClock();
    this._inputs = []; // [tick, bytes] not yet acknowledged
    const hub = room._hub;
    if (hub.replicas.has(topic)) throw new Error(`room already has a Replica for topic ${topic}`);
    hub.replicas.set(topic, this);
    if (maxEntities !== null) hub.options.set(topic, { maxEntities });
  }

  get decoder() { return this.room._hub.decoder(this.topic); }

  // The entity the game host assigned to this client on this topic (GameHost.assign_entity),
  // or null; it may not have arrived in a snapshot yet.
  get ownEntityId() {
    const id = this.room._hub.ownEntities.get(this.topic);
    return id === undefined ? null : id;
  }

  entityIds() { return this.decoder ? [...this.decoder.entities.keys()] : []; }

  // The newest received state of an entity.
  get(id) {
    const e = this.decoder?.entities.get(id);
    if (!e) return null;
    return { ...entityValue(e.type, e.history.get(e.newest)), type: e.type.name, typeId: e.typeId };
  }

  // The newest raw (quantized) values of an entity's fields, as the server's World holds them.
  quantized(id) {
    const e = this.decoder?.entities.get(id);
    return e ? e.history.get(e.newest).slice() : null;
  }

  entities() {
    const out = new Map();
    for (const id of this.entityIds()) out.set(id, this.get(id));
    return out;
  }

  // The server's clock now (seconds), from the round trips measured on the lossy channel.
  serverTime(localNow = nowSeconds()) {
    this.clock.update(localNow, this.room.endpoint.clockOffset);
    return this.clock.serverTime(localNow);
  }

  // The fractional tick to draw remote entities at: server time minus the interpolation delay.
  renderTick(localNow = nowSeconds()) {
    const server = this.serverTime(localNow);
    if (server === null || this.room.tickRate === null) return null;
    return (server - this.interpolationDelay - this.room.tickEpoch) * this.room.tickRate;
  }

  // Every entity at the render time, interpolated between the states received.
  interpolated(localNow = nowSeconds()) {
    const decoder = this.decoder;
    const tick = this.renderTick(localNow);
    if (!decoder || tick === null) return this.entities();
    const out = new Map();
    const maxTicks = this.maxExtrapolation * this.room.tickRate;
    const knownUntil = decoder.completeTick;
    for (const [id, e] of decoder.entities) {
      const history = [...e.history.entries()].sort((a, b) => a[0] - b[0]);
      const state = sample(e.type, history, tick, maxTicks, Math.max(e.newest, knownUntil));
      out.set(id, { ...state, type: e.type.name, typeId: e.typeId });
    }
    return out;
  }

  // How far the newest snapshot is ahead of the render time (ms).
  bufferDepthMs(localNow = nowSeconds()) {
    const tick = this.renderTick(localNow);
    if (tick === null || this.latestTick === null) return null;
    return ((this.latestTick - tick) / this.room.tickRate) * 1000;
  }

  // Send the local player's input for `tick` (bytes, at most 64), with the recent
  // unacknowledged ones (INPUT frame).
  sendInput(tick, data) {
    const bytes = toBytes(data);
    if (bytes.length > 64) throw new RangeError("an input is at most 64 bytes");
    const last = this._inputs.length ? this._inputs[this._inputs.length - 1][0] : null;
    if (last !== null && tick !== last + 1) this._inputs = []; // a frame holds consecutive ticks
    this._inputs.push([tick, bytes]);
    this._inputs = this._inputs.slice(-this.inputRedundancy);
    const w = new Writer().u32(this._inputs[0][0]).u8(this._inputs.length);
    for (const [, b] of this._inputs) w.u8(b.length).bytes(b);
    this.room.sendFrame(FrameType.INPUT, w.finish(), { key: `input:${this.topic}` });
  }

  // The last input the server had applied when it took the snapshot of that tick.
  lastInputApplied(snapshotTick) {
    const value = this.room._hub.inputAcks.get(snapshotTick);
    return value === undefined ? null : value;
  }

  _inputsAcknowledged(last) {
    this._inputs = this._inputs.filter(([t]) => t > last);
  }

  _onPart(part) {
    const decoder = this.decoder;
    for (const [what, id] of decoder.events.splice(0)) {
      if (what === "spawned") {
        if (decoder.entities.has(id)) this.emit("spawned", id, this.get(id));
      } else {
        this.emit("despawned", id);
      }
    }
    if (this.latestTick === null || part.tick > this.latestTick) {
      this.latestTick = part.tick;
      this.snapshotsReceived += 1;
      this.emit("snapshot", part.tick);
    }
  }
}

// -- helpers --------------------------------------------------------------------------------

function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new ConnectError(message, "timeout")), ms); }),
  ]).finally(() => clearTimeout(timer));
}

function iceGathered(pc, ms) {
  // No trickle ICE: the offer goes with every candidate (or what was found within `ms`).
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

function channelOpen(channel) {
  if (channel.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    channel.addEventListener("open", resolve, { once: true });
    channel.addEventListener("close", () => reject(new ConnectError(`channel ${channel.label} closed`)), { once: true });
  });
}
