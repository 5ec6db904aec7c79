// JSON schemas of the request bodies: fastify validates every request against them before a
// handler runs (no type coercion), so handlers see well-typed values within their ranges.

const int64 = { type: 'integer', minimum: -9223372036854775808, maximum: 9223372036854775807 } as const;
const stop = {
  anyOf: [
    { type: 'string' },
    { type: 'array', items: { type: 'string' }, maxItems: 16 },
    { type: 'null' },
  ],
} as const;

/** Sampling fields both endpoints take (OpenAI's, plus top_k, min_p and repetition_penalty as vLLM takes them). */
const samplingProperties = {
  model: { type: 'string', maxLength: 512 },
  max_tokens: { anyOf: [{ type: 'integer', minimum: 1, maximum: 1048576 }, { type: 'null' }] },
  temperature: { anyOf: [{ type: 'number', minimum: 0, maximum: 2 }, { type: 'null' }] },
  top_p: { anyOf: [{ type: 'number', exclusiveMinimum: 0, maximum: 1 }, { type: 'null' }] },
  top_k: { anyOf: [{ type: 'integer', minimum: -1, maximum: 1048576 }, { type: 'null' }] },
  min_p: { anyOf: [{ type: 'number', minimum: 0, maximum: 1 }, { type: 'null' }] },
  repetition_penalty: { anyOf: [{ type: 'number', exclusiveMinimum: 0, maximum: 100 }, { type: 'null' }] },
  presence_penalty: { anyOf: [{ type: 'number', minimum: -2, maximum: 2 }, { type: 'null' }] },
  frequency_penalty: { anyOf: [{ type: 'number', minimum: -2, maximum: 2 }, { type: 'null' }] },
  seed: { anyOf: [int64, { type: 'null' }] },
  stop,
  n: { anyOf: [{ type: 'integer', minimum: 1, maximum: 16 }, { type: 'null' }] },
  stream: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
  stream_options: {
    anyOf: [{ type: 'object', properties: { include_usage: { type: 'boolean' } }, additionalProperties: false }, { type: 'null' }],
  },
  user: { type: 'string', maxLength: 1024 },
  ignore_eos: { type: 'boolean' },
} as const;

const tokenIds = { type: 'array', items: { type: 'integer', minimum: 0, maximum: 2147483647 }, minItems: 1 } as const;

export const completionSchema = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    ...samplingProperties,
    // 0 with echo: the prompt scored (with logprobs) or echoed, nothing generated.
    max_tokens: { anyOf: [{ type: 'integer', minimum: 0, maximum: 1048576 }, { type: 'null' }] },
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 64 },
        tokenIds,
        { type: 'array', items: tokenIds, minItems: 1, maxItems: 64 },
      ],
    },
    logprobs: { anyOf: [{ type: 'integer', minimum: 0, maximum: 5 }, { type: 'null' }] },
    echo: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
  },
} as const;

const textPart = {
  type: 'object',
  required: ['type', 'text'],
  properties: { type: { const: 'text' }, text: { type: 'string' } },
} as const;

export const chatCompletionSchema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    ...samplingProperties,
    max_completion_tokens: { anyOf: [{ type: 'integer', minimum: 1, maximum: 1048576 }, { type: 'null' }] },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: { anyOf: [{ type: 'string' }, { type: 'array', items: textPart }, { type: 'null' }] },
          name: { type: 'string' },
        },
      },
    },
    logprobs: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
    top_logprobs: { anyOf: [{ type: 'integer', minimum: 0, maximum: 20 }, { type: 'null' }] },
  },
} as const;

export const tokenizeSchema = {
  type: 'object',
  properties: {
    model: { type: 'string' },
    prompt: { type: 'string' },
    messages: chatCompletionSchema.properties.messages,
    add_special_tokens: { type: 'boolean' },
  },
  oneOf: [{ required: ['prompt'] }, { required: ['messages'] }],
} as const;

export const detokenizeSchema = {
  type: 'object',
  required: ['tokens'],
  properties: {
    model: { type: 'string' },
    tokens: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 2147483647 } },
  },
} as const;

/** Fields a client may send that this server cannot honour: refused rather than silently ignored. */
export const UNSUPPORTED_FIELDS: Record<string, string> = {
  suffix: 'suffix (insertion) is not supported',
  best_of: 'best_of is not supported; use n',
  logit_bias: 'logit_bias is not supported',
  tools: 'tools (function calling) are not supported',
  tool_choice: 'tool_choice is not supported',
  functions: 'functions (function calling) are not supported',
  function_call: 'function_call is not supported',
  response_format: 'response_format (structured output) is not supported',
  audio: 'audio output is not supported',
  modalities: 'only text output is supported',
  prediction: 'predicted outputs are not supported',
};
