// Live updates from GET /v1/events/stream. EventSource cannot send an Authorization header,
// so the stream is read with fetch() and parsed here (the text/event-stream format of the
// HTML standard: fields per line, an event ends at a blank line).

import { token } from './auth.js';

export function parseEvents(buffer, onEvent) {
  let rest = buffer;
  for (;;) {
    const m = rest.match(/\r\n\r\n|\n\n|\r\r/);
    if (!m) return rest;
    const block = rest.slice(0, m.index);
    rest = rest.slice(m.index + m[0].length);
    const ev = { id: null, event: 'message', data: [] };
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const name = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (name === 'data') ev.data.push(value);
      else if (name === 'id') ev.id = value;
      else if (name === 'event') ev.event = value;
    }
    if (ev.data.length) onEvent({ id: ev.id, type: ev.event, data: ev.data.join('\n') });
  }
}

/** Follows the stream until stop() is called or a 401 arrives; reconnects (bounded backoff). */
export function follow(onEvent, onUnauthorized) {
  const controller = new AbortController();
  let lastId = null;
  let attempts = 0;
  let stopped = false;

  async function run() {
    while (!stopped && attempts < 50) {
      attempts += 1;
      try {
        const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${token()}` };
        if (lastId !== null) headers['Last-Event-ID'] = lastId;
        const res = await fetch('/v1/events/stream', { headers, signal: controller.signal, cache: 'no-store' });
        if (res.status === 401) {
          onUnauthorized();
          return;
        }
        if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
        attempts = 0;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), (ev) => {
            if (ev.id !== null) lastId = ev.id;
            let data = null;
            try { data = JSON.parse(ev.data); } catch { data = null; }
            if (data) onEvent(data);
          });
        }
      } catch (e) {
        if (stopped || (e && e.name === 'AbortError')) return;
      }
      await new Promise((r) => setTimeout(r, Math.min(30000, 1000 * 2 ** Math.min(attempts, 5))));
    }
  }
  run();
  return () => {
    stopped = true;
    controller.abort();
  };
}
