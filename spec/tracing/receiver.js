// A span collector on loopback for hemera.tracing's specs.
//
//   node receiver.js <nats-url> <batch-subject> <ready-subject>
//
// POST /v1/traces: an OTLP/HTTP JSON body, decoded with the protobuf
// definitions @opentelemetry/otlp-transformer ships (ids from hex to bytes
// as the OTLP JSON mapping says, then verify and fromObject: a field of a
// wrong name or type fails). POST /api/v2/spans: a Zipkin v2 JSON body,
// each span compared with what npm zipkin 0.22's JSON_V2 encoder writes
// for the same span. Each batch goes to <batch-subject> as
// {format, spans, problems}; {port} goes to <ready-subject} once listening.
'use strict';
const http = require('http');
const { connect, JSONCodec } = require('nats');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');
const zipkin = require('zipkin');
const Long = require('long');

const [natsUrl, batchSubject, readySubject] = process.argv.slice(2);
const Req = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
const Kind = root.opentelemetry.proto.trace.v1.Span.SpanKind;
const jc = JSONCodec();

const b64 = (hex) => Buffer.from(hex, 'hex').toString('base64');
const hex = (bytes) => Buffer.from(bytes).toString('hex');

function attrValue(v) {
  if (v.stringValue != null) return v.stringValue;
  if (v.boolValue != null) return v.boolValue;
  if (v.intValue != null) return Number(v.intValue);
  return v;
}

function decodeOtlp(body, problems) {
  const json = JSON.parse(body);
  for (const rs of json.resourceSpans || []) {
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        for (const k of ['traceId', 'spanId', 'parentSpanId']) {
          if (s[k] != null) {
            if (!/^[0-9a-f]+$/.test(s[k])) problems.push(`${k} ${s[k]} is not lower-case hex`);
            s[k] = b64(s[k]);
          }
        }
        // The JSON mapping writes 64-bit integers as decimal strings (as
        // OpenTelemetry JS's own JSON exporter does); verify wants Longs.
        for (const k of ['startTimeUnixNano', 'endTimeUnixNano']) {
          if (typeof s[k] !== 'string' || !/^[0-9]+$/.test(s[k])) problems.push(`${k} ${s[k]} is not a decimal string`);
          else s[k] = Long.fromString(s[k], true);
        }
      }
    }
  }
  const why = Req.verify(json);
  if (why) problems.push('verify: ' + why);
  const msg = Req.decode(Req.encode(Req.fromObject(json)).finish());
  const spans = [];
  for (const rs of msg.resourceSpans) {
    const resource = {};
    for (const a of rs.resource.attributes) resource[a.key] = attrValue(a.value);
    for (const ss of rs.scopeSpans) {
      for (const s of ss.spans) {
        const attributes = {};
        for (const a of s.attributes) attributes[a.key] = attrValue(a.value);
        spans.push({
          service: resource['service.name'],
          traceId: hex(s.traceId), spanId: hex(s.spanId),
          parentSpanId: s.parentSpanId && s.parentSpanId.length ? hex(s.parentSpanId) : null,
          name: s.name, kind: Kind[s.kind],
          start: String(s.startTimeUnixNano), end: String(s.endTimeUnixNano),
          attributes,
          status: s.status ? { code: s.status.code, message: s.status.message } : null,
        });
      }
    }
  }
  return spans;
}

function sorted(v) {
  if (Array.isArray(v)) return v.map(sorted);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = sorted(v[k]);
    return o;
  }
  return v;
}

// The same span through npm zipkin's model and encoder.
function reference(s) {
  const { model, TraceId, option, jsonEncoder } = zipkin;
  const span = new model.Span(new TraceId({
    traceId: s.traceId, spanId: s.id,
    parentId: s.parentId ? new option.Some(s.parentId) : option.None,
    sampled: new option.Some(true),
  }));
  span.setName(s.name);
  span.setKind(s.kind);
  span.setTimestamp(s.timestamp);
  span.setDuration(s.duration);
  span.setLocalEndpoint(new model.Endpoint({ serviceName: s.localEndpoint.serviceName }));
  for (const [k, v] of Object.entries(s.tags || {})) span.putTag(k, v);
  return JSON.parse(jsonEncoder.JSON_V2.encode(span));
}

function decodeZipkin(body, problems) {
  const spans = JSON.parse(body);
  for (const s of spans) {
    const want = JSON.stringify(sorted(reference(s)));
    const got = JSON.stringify(sorted(s));
    if (want !== got) problems.push(`zipkin span differs from npm zipkin's:\n got  ${got}\n want ${want}`);
    for (const [k, v] of Object.entries(s.tags || {})) {
      if (typeof v !== 'string') problems.push(`zipkin tag ${k} is not a string`);
    }
  }
  return spans;
}

(async () => {
  const nc = await connect({ servers: natsUrl, name: 'tracing-receiver' });
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const problems = [];
      let format, spans = [];
      try {
        if (req.method !== 'POST') problems.push('method ' + req.method);
        if (!/^application\/json/.test(req.headers['content-type'] || '')) {
          problems.push('content-type ' + req.headers['content-type']);
        }
        if (req.url === '/v1/traces') { format = 'otlp'; spans = decodeOtlp(body, problems); }
        else if (req.url === '/api/v2/spans') { format = 'zipkin'; spans = decodeZipkin(body, problems); }
        else problems.push('path ' + req.url);
      } catch (e) {
        problems.push(String(e && e.stack || e));
      }
      nc.publish(batchSubject, jc.encode({ format, spans, problems }));
      res.writeHead(problems.length ? 400 : 200, { 'Content-Type': 'application/json' });
      res.end('{}');
    });
  });
  server.listen(0, '127.0.0.1', async () => {
    nc.publish(readySubject, jc.encode({ port: server.address().port }));
    await nc.flush();
  });
  // Ends with its parent's test run (the spec kills it by pid).
  process.on('SIGTERM', async () => { server.close(); await nc.drain(); process.exit(0); });
})().catch((e) => { console.error(e); process.exit(1); });
