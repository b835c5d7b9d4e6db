// compassd end-to-end tests with the official `openai` npm client (node:test + node:assert).
//
//   node e2e.mjs http://127.0.0.1:PORT MODEL...
//
// (or COMPASS_E2E_URL and COMPASS_E2E_MODELS="a b c"). run.sh starts mockllm and compassd and
// passes one route per deployment. Replies come from mockllm or the in-process mock plugin:
// both answer "mock reply to: <last user message>" deterministically.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { NotFoundError, BadRequestError } from 'openai';

const args = process.argv.slice(2).filter((a) => a !== '--');
const BASE = (args[0] || process.env.COMPASS_E2E_URL || '').replace(/\/+$/, '');
const MODELS = args.length > 1 ? args.slice(1)
  : (process.env.COMPASS_E2E_MODELS || '').split(/[\s,]+/).filter(Boolean);
if (!BASE || MODELS.length === 0) {
  console.error('usage: node e2e.mjs http://127.0.0.1:PORT MODEL...');
  process.exit(2);
}

const client = new OpenAI({
  baseURL: `${BASE}/v1`,
  apiKey: 'unused',
  maxRetries: 0,
  timeout: 20_000,
});
const T = { timeout: 30_000 };

// Ten words: the reply to them streams in more than six events for every wire format.
const TEN_WORDS = 'one two three four five six seven eight nine ten';

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'city name' } },
      required: ['city'],
    },
  },
};

function expectedReply(text) {
  // mockllm and the mock plugin both cut the user text at 64 bytes (ASCII here)
  return `mock reply to: ${text.slice(0, 64)}`;
}

function assertUsage(usage, where) {
  assert.ok(usage, `${where}: usage missing`);
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) {
    assert.equal(typeof usage[k], 'number', `${where}: usage.${k} is ${usage[k]}`);
    assert.ok(Number.isInteger(usage[k]) && usage[k] >= 0, `${where}: usage.${k} = ${usage[k]}`);
  }
  assert.ok(usage.prompt_tokens > 0, `${where}: prompt_tokens = 0`);
  assert.ok(usage.completion_tokens > 0, `${where}: completion_tokens = 0`);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens,
    `${where}: total_tokens != prompt + completion`);
}

// Collects streamed tool-call deltas (by index) into complete calls.
function mergeToolCallDeltas(calls, deltas) {
  for (const d of deltas || []) {
    assert.equal(typeof d.index, 'number', 'tool call delta without index');
    const c = (calls[d.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
    if (d.id) c.id = d.id;
    if (d.type) c.type = d.type;
    if (d.function?.name) c.function.name += d.function.name;
    if (d.function?.arguments) c.function.arguments += d.function.arguments;
  }
  return calls;
}

// mockllm's URL (run.sh): lets a test check what compass actually sent upstream.
const MOCKLLM = (process.env.COMPASS_E2E_MOCKLLM || '').replace(/\/+$/, '');
// The upstream request path each provider's plugin must produce (routes are "e2e-<plugin>").
const UPSTREAM_PATH = {
  openai: /^\/v1\/chat\/completions$/,
  anthropic: /^\/v1\/messages$/,
  gemini: /^\/v1beta\/models\/[^/:]+:generateContent$/,
  azure: /^\/openai\/deployments\/[^/]+\/chat\/completions(\?.*)?$/,
  replicate: /^\/v1\/(models\/[^/]+\/[^/]+\/)?predictions$/,
};

// A provider without tool calling (Replicate) refuses tools with a clear 400 before any
// upstream call; such a deployment skips the tool tests. Anything else is a failure.
async function toolsOrSkip(t, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof BadRequestError && /tool.*not supported|no tool calling/i.test(e.message)) {
      t.skip(`deployment has no tool calling (${e.message})`);
      return undefined;
    }
    throw e;
  }
}

for (const model of MODELS) {
  const plugin = model.replace(/^e2e-/, '');
  describe(`chat ${model}`, () => {
    test('reaches the upstream in its own wire format', T, async (t) => {
      if (!MOCKLLM || !UPSTREAM_PATH[plugin]) {
        return t.skip(plugin === 'mock' ? 'in-process provider' : 'no expectation for this provider');
      }
      await fetch(`${MOCKLLM}/_mock/reset`, { method: 'POST' });
      const { response } = await client.chat.completions
        .create({ model, messages: [{ role: 'user', content: 'which wire?' }] })
        .withResponse();
      assert.equal(response.headers.get('x-compass-route'), model);
      assert.equal(response.headers.get('x-compass-attempts'), '1');
      const stats = await (await fetch(`${MOCKLLM}/_mock/stats`)).json();
      const last = stats.last_request;
      assert.ok(last, 'mockllm saw no request');
      assert.match(last.path, UPSTREAM_PATH[plugin]);
    });

    test('non-streaming: deterministic content, usage, x-request-id', T, async () => {
      const text = `hello from the npm client to ${model}`;
      const { data, response } = await client.chat.completions
        .create({ model, messages: [{ role: 'system', content: 'Be brief.' },
          { role: 'user', content: text }] })
        .withResponse();
      assert.equal(response.status, 200);
      assert.equal(data.object, 'chat.completion');
      assert.equal(typeof data.id, 'string');
      assert.equal(data.choices.length, 1);
      assert.equal(data.choices[0].index, 0);
      assert.equal(data.choices[0].message.role, 'assistant');
      assert.equal(data.choices[0].message.content, expectedReply(text));
      assert.equal(data.choices[0].finish_reason, 'stop');
      assertUsage(data.usage, 'non-streaming');
      const rid = response.headers.get('x-request-id');
      assert.ok(rid, 'no x-request-id header');
      assert.equal(data._request_id, rid, 'client did not expose x-request-id as _request_id');
    });

    // Regression: the replicate plugin once answered "stop" even when the prediction's
    // metrics.output_token_count reached the max_tokens it sent.
    test('non-streaming: max_tokens cuts the reply (finish_reason length)', {
      ...T,
      skip: false,
    }, async () => {
      const text = 'one two three four five six';
      const r = await client.chat.completions.create({
        model, max_tokens: 2, messages: [{ role: 'user', content: text }] });
      assert.equal(r.choices[0].finish_reason, 'length');
      assert.ok(expectedReply(text).startsWith(r.choices[0].message.content.trim()),
        `unexpected cut reply: ${JSON.stringify(r.choices[0].message.content)}`);
      assert.ok(r.choices[0].message.content.trim().split(/\s+/).length <= 2);
    });

    test('streaming with include_usage: content reassembles, last chunk has usage', T, async () => {
      const text = `stream this please, ${model}`;
      const { data: stream, response } = await client.chat.completions
        .create({ model, stream: true, stream_options: { include_usage: true },
          messages: [{ role: 'user', content: text }] })
        .withResponse();
      assert.match(response.headers.get('content-type') || '', /^text\/event-stream/);
      assert.ok(response.headers.get('x-request-id'), 'no x-request-id on a stream');
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
      let content = '';
      let finish = null;
      let role = null;
      const ids = new Set();
      for (const c of chunks) {
        assert.equal(c.object, 'chat.completion.chunk');
        ids.add(c.id);
        for (const ch of c.choices) {
          if (ch.delta?.role) role = ch.delta.role;
          if (ch.delta?.content) content += ch.delta.content;
          if (ch.finish_reason) finish = ch.finish_reason;
        }
      }
      assert.equal(ids.size, 1, 'chunks carry different ids');
      assert.equal(role, 'assistant');
      assert.equal(content, expectedReply(text));
      assert.equal(finish, 'stop');
      const last = chunks.at(-1);
      assert.deepEqual(last.choices, [], 'the usage chunk has choices');
      assertUsage(last.usage, 'stream usage chunk');
      for (const c of chunks.slice(0, -1)) {
        assert.ok(c.usage == null, 'usage on a chunk before the last');
      }
    });

    test('streaming without include_usage: no usage chunk', T, async () => {
      const text = 'no usage here';
      const stream = await client.chat.completions.create({
        model, stream: true, messages: [{ role: 'user', content: text }] });
      let content = '';
      for await (const c of stream) {
        assert.ok(c.usage == null, 'usage sent although not asked for');
        content += c.choices[0]?.delta?.content ?? '';
      }
      assert.equal(content, expectedReply(text));
    });

    test('UTF-8 and JSON escapes survive the round trip (non-streaming and streaming)', T, async () => {
      const text = 'h\u00e9llo \u4e16\u754c \u{1F680} "q" \\ back\tslash';
      const r = await client.chat.completions.create({ model,
        messages: [{ role: 'user', content: text }] });
      assert.equal(r.choices[0].message.content, expectedReply(text));
      const stream = await client.chat.completions.create({ model, stream: true,
        messages: [{ role: 'user', content: text }] });
      let content = '';
      for await (const c of stream) content += c.choices[0]?.delta?.content ?? '';
      assert.equal(content, expectedReply(text));
    });

    test('parallel requests on one client all answer correctly', T, async () => {
      const texts = Array.from({ length: 16 }, (_, i) => `parallel request number ${i}`);
      const replies = await Promise.all(texts.map((text, i) => (i % 2
        ? client.chat.completions.create({ model, messages: [{ role: 'user', content: text }] })
          .then((r) => r.choices[0].message.content)
        : client.chat.completions.create({ model, stream: true,
          messages: [{ role: 'user', content: text }] }).then(async (st) => {
          let c = '';
          for await (const ch of st) c += ch.choices[0]?.delta?.content ?? '';
          return c;
        }))));
      replies.forEach((c, i) => assert.equal(c, expectedReply(texts[i])));
    });

    test('common sampling parameters and a user are accepted', T, async () => {
      const text = 'sampling parameters';
      const r = await client.chat.completions.create({ model, temperature: 0.5, top_p: 0.9,
        stop: ['zzz-never'], user: 'e2e-user-1', max_completion_tokens: 100,
        messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: text }] });
      assert.equal(r.choices[0].message.content, expectedReply(text));
    });

    test('content as an array of text parts', T, async () => {
      const r = await client.chat.completions.create({ model, messages: [
        { role: 'user', content: [{ type: 'text', text: 'parts one' }, { type: 'text', text: ' and two' }] }] });
      const c = r.choices[0].message.content;
      assert.ok(c === expectedReply('parts one and two') || c === expectedReply('parts one\n and two') ||
        c.startsWith('mock reply to: parts one'), `content ${JSON.stringify(c)}`);
    });

    test('SDK stream helper: finalContent()', T, async () => {
      const text = 'helper stream text';
      const s = client.chat.completions.stream({ model, messages: [{ role: 'user', content: text }] });
      let deltas = '';
      s.on('content', (d) => { deltas += d; });
      assert.equal(await s.finalContent(), expectedReply(text));
      assert.equal(deltas, expectedReply(text));
    });

    test('tools: tool_choice required → a parseable function call', T, async (t) => {
      const r = await toolsOrSkip(t, () => client.chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
        tools: [WEATHER_TOOL],
        tool_choice: 'required',
      }));
      if (!r) return;
      const msg = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, 'tool_calls');
      assert.ok(Array.isArray(msg.tool_calls) && msg.tool_calls.length >= 1, 'no tool_calls');
      const call = msg.tool_calls[0];
      assert.equal(call.type, 'function');
      assert.equal(typeof call.id, 'string');
      assert.ok(call.id.length > 0, 'empty tool call id');
      assert.equal(call.function.name, 'get_weather');
      const a = JSON.parse(call.function.arguments);
      assert.equal(typeof a, 'object');
      assert.equal(typeof a.city, 'string', `arguments: ${call.function.arguments}`);
      assertUsage(r.usage, 'tool call');
    });

    test('tools: a tool result round-trips into a text answer', T, async (t) => {
      const r = await toolsOrSkip(t, () => client.chat.completions.create({
        model,
        messages: [
          { role: 'user', content: 'What is the weather in Paris?' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'call_e2e_1', type: 'function',
            function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
          { role: 'tool', tool_call_id: 'call_e2e_1', content: '{"temp_c":21}' },
          { role: 'user', content: 'thanks, summarise' },
        ],
        tools: [WEATHER_TOOL],
        tool_choice: 'none',
      }));
      if (!r) return;
      assert.equal(r.choices[0].message.content, expectedReply('thanks, summarise'));
    });

    test('tools: streamed tool call reassembles from deltas', T, async (t) => {
      const stream = await toolsOrSkip(t, () => client.chat.completions.create({
        model,
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'Weather in Oslo?' }],
        tools: [WEATHER_TOOL],
        tool_choice: 'required',
      }));
      if (!stream) return;
      const calls = [];
      let finish = null;
      let usage = null;
      for await (const c of stream) {
        for (const ch of c.choices) {
          mergeToolCallDeltas(calls, ch.delta?.tool_calls);
          if (ch.finish_reason) finish = ch.finish_reason;
        }
        if (c.usage) usage = c.usage;
      }
      assert.equal(finish, 'tool_calls');
      assert.ok(calls.length >= 1, 'no tool call deltas');
      assert.equal(calls[0].function.name, 'get_weather');
      assert.ok(calls[0].id, 'streamed tool call without id');
      const a = JSON.parse(calls[0].function.arguments);
      assert.equal(typeof a.city, 'string', `arguments: ${calls[0].function.arguments}`);
      assertUsage(usage, 'streamed tool call');
    });

    test('tools: the SDK stream helper (finalChatCompletion) agrees', T, async (t) => {
      // The SDK's own stream accumulator (ChatCompletionStream) must agree with the chunks.
      const final = await toolsOrSkip(t, () => client.chat.completions.stream({
        model,
        messages: [{ role: 'user', content: 'Weather in Rome?' }],
        tools: [WEATHER_TOOL],
        tool_choice: 'required',
      }).finalChatCompletion());
      if (!final) return;
      const call = final.choices[0].message.tool_calls?.[0];
      assert.ok(call, 'no tool call in finalChatCompletion');
      assert.equal(call.function.name, 'get_weather');
      assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');
    });
  });

  describe(`upstream failures ${model}`, () => {
    const viaMockllm = MOCKLLM && plugin !== 'mock';

    test('upstream 429 → RateLimitError 429 (no retries by the client)', T, async () => {
      await assert.rejects(
        client.chat.completions.create({ model,
          messages: [{ role: 'user', content: 'slow down #mock{"status": 429, "retry_after": 1}' }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.RateLimitError, `got ${e?.constructor?.name} ${e?.status}: ${e?.message}`);
          assert.equal(e.status, 429);
          assert.ok(e.headers?.get?.('x-request-id'), 'no x-request-id on the error');
          return true;
        });
    });

    test('upstream 500 → InternalServerError (5xx) listing the attempt', T, async () => {
      await assert.rejects(
        client.chat.completions.create({ model,
          messages: [{ role: 'user', content: 'break #mock{"status": 500}' }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.InternalServerError, `got ${e?.constructor?.name} ${e?.status}: ${e?.message}`);
          assert.ok(e.status >= 500 && e.status <= 599, `status ${e.status}`);
          assert.ok(e.error && typeof e.error.message === 'string', 'error body not in OpenAI shape');
          return true;
        });
    });

    test('streaming, upstream 429 before any byte → RateLimitError from create()', T, async () => {
      await assert.rejects(
        client.chat.completions.create({ model, stream: true,
          messages: [{ role: 'user', content: 'slow down #mock{"status": 429}' }] }),
        (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
    });

    test('stream broken mid-way by the upstream → the client throws APIError after partial content', T,
      async (t) => {
        if (!viaMockllm) return t.skip('needs mockllm stream shaping');
        const stream = await client.chat.completions.create({ model, stream: true,
          messages: [{ role: 'user', content: `${TEN_WORDS} #mock{"error_event_after": 6}` }] });
        let content = '';
        await assert.rejects(
          (async () => {
            for await (const c of stream) content += c.choices[0]?.delta?.content ?? '';
          })(),
          (e) => {
            assert.ok(e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
            return true;
          });
        assert.ok(content.length > 0, 'no content before the error');
        assert.ok(expectedReply(TEN_WORDS).startsWith(content) && content !== expectedReply(TEN_WORDS),
          `partial content ${JSON.stringify(content)}`);
      });

    test('stream dropped by the upstream → an error event, the SDK throws APIError', T, async (t) => {
      if (!viaMockllm) return t.skip('needs mockllm stream shaping');
      const stream = await client.chat.completions.create({ model, stream: true,
        messages: [{ role: 'user', content: `${TEN_WORDS} #mock{"drop_after": 6}` }] });
      let finish = null;
      let content = '';
      await assert.rejects(
        (async () => {
          for await (const c of stream) {
            finish = c.choices[0]?.finish_reason ?? finish;
            content += c.choices[0]?.delta?.content ?? '';
          }
        })(),
        (e) => {
          // compass ends a stream that broke after content reached the client with an error
          // event, which the SDK raises as APIError (a silent end would look like success)
          assert.ok(e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
          return true;
        });
      assert.ok(content.length > 0, 'no content before the drop');
      assert.equal(finish, null, 'a dropped stream ended with a finish_reason');
    });

    test('client abort mid-stream frees the upstream request', T, async (t) => {
      if (!viaMockllm) return t.skip('needs mockllm stats');
      await fetch(`${MOCKLLM}/_mock/reset`, { method: 'POST' });
      const stream = await client.chat.completions.create({ model, stream: true,
        messages: [{ role: 'user', content: 'a b c d e f g h i j #mock{"chunk_delay_ms": 200}' }] });
      let n = 0;
      for await (const c of stream) {
        if (++n === 2) break; // break → the SDK aborts the request
      }
      let stats;
      const deadline = Date.now() + 5000;
      do {
        await new Promise((r) => setTimeout(r, 100));
        stats = await (await fetch(`${MOCKLLM}/_mock/stats`)).json();
      } while ((stats.in_flight > 0 || stats.streams_aborted < 1) && Date.now() < deadline);
      assert.equal(stats.in_flight, 0, `upstream still in flight: ${JSON.stringify(stats)}`);
      assert.equal(stats.streams_aborted, 1, `upstream stream not aborted: ${JSON.stringify(stats)}`);
      // and compassd still answers
      const r = await client.chat.completions.create({ model,
        messages: [{ role: 'user', content: 'still there?' }] });
      assert.equal(r.choices[0].message.content, expectedReply('still there?'));
    });
  });

  describe(`embeddings ${model}`, () => {
    let served = true;
    let reason = '';
    before(async () => {
      try {
        await client.embeddings.create({ model, input: 'probe', encoding_format: 'float' });
      } catch (e) {
        if (e instanceof BadRequestError && /does not serve embeddings/.test(e.message)) {
          served = false;
          reason = e.message;
        }
      }
    });

    test('embeddings.create (base64 by default, decoded by the client)', T, async (t) => {
      if (!served) return t.skip(`deployment does not serve embeddings (${reason})`);
      const { data: r, response } = await client.embeddings
        .create({ model, input: 'hello embeddings' })
        .withResponse();
      assert.equal(response.status, 200);
      assert.equal(r.object, 'list');
      assert.equal(r.data.length, 1);
      const v = r.data[0].embedding;
      assert.ok(Array.isArray(v), `embedding is ${typeof v}`);
      assert.ok(v.length > 0);
      for (const x of v) assert.ok(typeof x === 'number' && Number.isFinite(x), `element ${x}`);
      // the same vector when asked for floats
      const f = await client.embeddings.create({
        model, input: 'hello embeddings', encoding_format: 'float' });
      const fv = f.data[0].embedding;
      assert.equal(v.length, fv.length, 'base64 and float vectors differ in length');
      for (let i = 0; i < v.length; i++) {
        assert.ok(Math.abs(v[i] - fv[i]) <= 1e-6 * Math.max(1, Math.abs(fv[i])),
          `element ${i}: base64 ${v[i]} vs float ${fv[i]}`);
      }
      assert.ok(r.usage && typeof r.usage.prompt_tokens === 'number', 'usage missing');
    });

    test('embeddings.create with several inputs', T, async (t) => {
      if (!served) return t.skip(`deployment does not serve embeddings (${reason})`);
      const r = await client.embeddings.create({ model, input: ['a', 'bb', 'ccc'] });
      assert.equal(r.data.length, 3);
      r.data.forEach((d, i) => {
        assert.equal(d.index, i);
        assert.equal(d.embedding.length, r.data[0].embedding.length);
      });
      assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding, 'different inputs, same vector');
    });
  });
}

describe('errors', () => {
  const model = MODELS[0];

  test('unknown model → NotFoundError 404', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model-e2e',
        messages: [{ role: 'user', content: 'hi' }] }),
      (e) => {
        assert.ok(e instanceof NotFoundError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 404);
        assert.equal(e.code, 'model_not_found');
        assert.ok(e.headers?.get?.('x-request-id'), 'no x-request-id on the error');
        return true;
      });
  });

  test('unknown model, streaming → NotFoundError 404', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model-e2e', stream: true,
        messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof NotFoundError && e.status === 404);
  });

  test('malformed request (messages not an array) → BadRequestError 400', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model, messages: 'hello' }),
      (e) => {
        assert.ok(e instanceof BadRequestError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 400);
        assert.match(e.message, /messages/);
        assert.equal(e.type, 'invalid_request_error');
        return true;
      });
  });

  test('a wrong role → BadRequestError 400 naming the field', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model, messages: [{ role: 'user', content: 'a' },
        { role: 'wizard', content: 'b' }] }),
      (e) => {
        assert.ok(e instanceof BadRequestError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.param, 'messages[1].role');
        return true;
      });
  });

  test('x-request-id comes back on response.headers; our own is echoed', T, async () => {
    const { data, response } = await client.chat.completions
      .create({ model, messages: [{ role: 'user', content: 'id please' }] },
        { headers: { 'x-request-id': 'e2e-req-0001' } })
      .withResponse();
    assert.equal(response.headers.get('x-request-id'), 'e2e-req-0001');
    assert.equal(data._request_id, 'e2e-req-0001');
    assert.equal(response.headers.get('x-compass-route'), model);
    assert.ok(response.headers.get('x-compass-provider'), 'no x-compass-provider');
    assert.ok(response.headers.get('x-compass-model'), 'no x-compass-model');
  });

  // compassd answers 413 as soon as it sees Content-Length over the limit and closes the
  // connection without reading the body; the unread body makes the kernel reset the
  // connection, and node's fetch (which never sends Expect: 100-continue and is still
  // writing) then often loses the 413: the SDK throws APIConnectionError (ECONNRESET) in
  // roughly a third of attempts. Ten attempts make that reliable.
  test('a body over server.max_body_bytes → APIError 413 (every time)', {
    ...T,
    skip: false,
  }, async () => {
    const big = 'x'.repeat(1_200_000);
    for (let i = 0; i < 10; i++) {
      await assert.rejects(
        client.chat.completions.create({ model, messages: [{ role: 'user', content: big }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
          assert.equal(e.status, 413,
            `attempt ${i}: ${e?.constructor?.name}: ${e?.message} ${e?.cause?.cause?.code ?? ''}`);
          assert.equal(e.code, 'request_too_large');
          return true;
        });
    }
  });

  test('fields the SDK passes through unchanged (store, metadata, service_tier) are tolerated', T,
    async () => {
      const r = await client.chat.completions.create({ model: MODELS.find((m) => m === 'e2e-openai') ?? model,
        store: false, metadata: { suite: 'e2e' }, service_tier: 'auto', parallel_tool_calls: false,
        messages: [{ role: 'user', content: 'extra fields' }] });
      assert.equal(r.choices[0].message.content, expectedReply('extra fields'));
    });

  test('models.list shows every exercised route', T, async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    for (const m of MODELS) assert.ok(ids.includes(m), `${m} not in /v1/models: ${ids}`);
  });
});

// --- the Anthropic-format front door (POST /v1/messages), when compassd has one --------------
async function messages(body, extraHeaders = {}) {
  return fetch(`${BASE}/v1/messages`, {
    method: 'POST',
    headers: {
      'x-api-key': 'unused',
      'anthropic-version': '2023-06-01',
      'content-type': 'application/json',
      ...extraHeaders,
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
}

function parseSSE(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    if (!block.trim()) continue;
    let event = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (event === null && data.length === 0) continue;
    events.push({ event, data: data.length ? JSON.parse(data.join('\n')) : null });
  }
  return events;
}

describe('anthropic front door (POST /v1/messages)', () => {
  let wired = true;
  before(async () => {
    const r = await messages({ model: MODELS[0], max_tokens: 16,
      messages: [{ role: 'user', content: 'probe' }] });
    await r.arrayBuffer();
    if (r.status === 404 || r.status === 405) wired = false;
  });

  for (const model of MODELS) {
    test(`${model}: non-streaming Messages object`, T, async (t) => {
      if (!wired) return t.skip('compassd does not answer POST /v1/messages (404)');
      const text = `hello over the messages API, ${model}`;
      const r = await messages({
        model,
        max_tokens: 256,
        system: 'You are terse.',
        messages: [{ role: 'user', content: text }],
      });
      const body = await r.text();
      assert.equal(r.status, 200, body);
      const m = JSON.parse(body);
      assert.equal(m.type, 'message');
      assert.equal(m.role, 'assistant');
      assert.equal(typeof m.id, 'string');
      assert.ok(Array.isArray(m.content) && m.content.length >= 1, body);
      assert.equal(m.content[0].type, 'text');
      assert.equal(m.content[0].text, expectedReply(text));
      assert.equal(m.stop_reason, 'end_turn');
      assert.equal(typeof m.usage?.input_tokens, 'number', body);
      assert.equal(typeof m.usage?.output_tokens, 'number', body);
    });

    test(`${model}: streaming event sequence message_start … message_stop`, T, async (t) => {
      if (!wired) return t.skip('compassd does not answer POST /v1/messages (404)');
      const text = `stream over the messages API, ${model}`;
      const r = await messages({
        model,
        max_tokens: 256,
        stream: true,
        system: 'You are terse.',
        messages: [{ role: 'user', content: text }],
      });
      const body = await r.text();
      assert.equal(r.status, 200, body);
      assert.match(r.headers.get('content-type') || '', /^text\/event-stream/);
      const events = parseSSE(body).filter((e) => e.event !== 'ping');
      const names = events.map((e) => e.event);
      for (const e of events) assert.equal(e.data?.type, e.event, `event ${e.event} data.type`);
      assert.equal(names[0], 'message_start', names.join(','));
      assert.equal(names.at(-1), 'message_stop', names.join(','));
      assert.equal(names.at(-2), 'message_delta', names.join(','));
      assert.equal(events[0].data.message.type, 'message');
      assert.equal(events[0].data.message.role, 'assistant');
      assert.ok(names.includes('content_block_start'), names.join(','));
      assert.ok(names.includes('content_block_stop'), names.join(','));
      assert.ok(names.indexOf('content_block_start') < names.indexOf('content_block_delta'));
      assert.ok(names.lastIndexOf('content_block_delta') < names.lastIndexOf('content_block_stop'));
      const out = events
        .filter((e) => e.event === 'content_block_delta' && e.data.delta?.type === 'text_delta')
        .map((e) => e.data.delta.text)
        .join('');
      assert.equal(out, expectedReply(text));
      const md = events.at(-2).data;
      assert.equal(md.delta?.stop_reason, 'end_turn');
      assert.equal(typeof md.usage?.output_tokens, 'number');
    });
  }
});
