// nats.js 2.x on the other side of hemera.tracing's W3C trace context.
//
//   node natsjs.js request <nats-url> <subject> <payload> <traceparent> <result-subject>
//       sends a request with a traceparent header (nats.js headers()) and
//       publishes {reply} to <result-subject>
//   node natsjs.js listen <nats-url> <subject> <ready-subject> <result-subject>
//       subscribes, answers the first request with a Hemera reply and
//       publishes {traceparent, tracestate} (its headers) to <result-subject>
'use strict';
const { connect, headers, JSONCodec, StringCodec } = require('nats');

const [mode, natsUrl, ...rest] = process.argv.slice(2);
const jc = JSONCodec();
const sc = StringCodec();

(async () => {
  const nc = await connect({ servers: natsUrl, name: 'tracing-natsjs' });
  if (mode === 'request') {
    const [subject, payload, traceparent, resultSubject] = rest;
    const h = headers();
    h.set('traceparent', traceparent);
    h.set('tracestate', 'vendor=natsjs');
    const m = await nc.request(subject, sc.encode(payload), { headers: h, timeout: 10000 });
    nc.publish(resultSubject, jc.encode({ reply: JSON.parse(sc.decode(m.data)) }));
  } else if (mode === 'listen') {
    const [subject, readySubject, resultSubject] = rest;
    const sub = nc.subscribe(subject, { max: 1 });
    await nc.flush();
    nc.publish(readySubject, jc.encode({ ready: true }));
    for await (const m of sub) {
      const body = JSON.parse(sc.decode(m.data));
      const got = {
        traceparent: m.headers ? m.headers.get('traceparent') : null,
        tracestate: m.headers && m.headers.has('tracestate') ? m.headers.get('tracestate') : null,
      };
      m.respond(jc.encode({ meta: body.meta, trace: body.trace, request: body.request, result: true, error: null }));
      nc.publish(resultSubject, jc.encode(got));
    }
  } else {
    throw new Error('unknown mode ' + mode);
  }
  await nc.drain();
})().catch((e) => { console.error(e); process.exit(1); });
