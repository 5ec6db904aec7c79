// Chat messages → prompt text, through the model's own chat template (tokenizer_config.json's
// chat_template, a Jinja template, rendered by @huggingface/jinja as transformers'
// apply_chat_template does), or DEFAULT_CHAT_TEMPLATE for models that have none.
import { Template } from '@huggingface/jinja';

/**
 * For models without a chat template (base models such as stories260K): the beginning-of-sequence
 * token, then one "role: content" line per message, then "assistant:" for the reply.
 */
export const DEFAULT_CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/** A special token's text from tokenizer_config.json: a string or an AddedToken object. */
function specialToken(config: Record<string, unknown>, key: string): string {
  const value = config[key];
  if (typeof value === 'string') return value;
  const content = (value as { content?: unknown } | null | undefined)?.content;
  return typeof content === 'string' ? content : '';
}

export class ChatTemplate {
  private readonly template: Template;
  readonly source: string;
  readonly isDefault: boolean;
  private readonly specialTokens: Record<string, string>;

  constructor(tokenizerConfig: Record<string, unknown>) {
    let source = tokenizerConfig.chat_template;
    // Some configs list named templates: [{name, template}]; "default" is the one for chat.
    if (Array.isArray(source)) {
      const named = source as { name?: unknown; template?: unknown }[];
      source = (named.find((t) => t.name === 'default') ?? named[0])?.template;
    }
    this.isDefault = typeof source !== 'string';
    this.source = typeof source === 'string' ? source : DEFAULT_CHAT_TEMPLATE;
    try {
      this.template = new Template(this.source);
    } catch (error) {
      throw new Error(`tokenizer_config.json: the chat template does not parse: ${(error as Error).message}`);
    }
    this.specialTokens = {
      bos_token: specialToken(tokenizerConfig, 'bos_token'),
      eos_token: specialToken(tokenizerConfig, 'eos_token'),
      unk_token: specialToken(tokenizerConfig, 'unk_token'),
      pad_token: specialToken(tokenizerConfig, 'pad_token'),
    };
  }

  /** The prompt text for `messages`, ending where the assistant's reply begins. */
  render(messages: ChatMessage[]): string {
    return this.template.render({ messages, add_generation_prompt: true, ...this.specialTokens });
  }
}
