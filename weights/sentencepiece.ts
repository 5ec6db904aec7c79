// A SentencePiece BPE vocabulary (pieces with scores) → a Hugging Face tokenizer.json.
//
// SentencePiece BPE merges, at each step, the adjacent pair whose concatenation is a piece with the
// highest score. A Hugging Face BPE applies merges by rank. So every split of a piece into two
// pieces becomes a merge, ranked by the merged piece's score (ties: by the ids of the parts), the
// way transformers' SentencePieceExtractor builds them. Characters missing from the vocabulary fall
// back to <0xXX> byte pieces.

export const enum PieceType {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

export interface SentencePieceVocab {
  /** Pieces with SentencePiece's ▁ for spaces; byte pieces spelled <0xXX>. */
  pieces: string[];
  scores: number[];
  types: PieceType[];
  unkId: number;
  bosId: number;
  eosId: number;
}

const BYTE_PIECE = /^<0x[0-9A-F]{2}>$/;

/** Guesses piece types where a format stores none (llama2.c): specials by id, bytes by spelling. */
export function inferPieceTypes(pieces: string[], ids: { unkId: number; bosId: number; eosId: number }): PieceType[] {
  return pieces.map((piece, id) => {
    if (id === ids.unkId) return PieceType.Unknown;
    if (id === ids.bosId || id === ids.eosId) return PieceType.Control;
    return BYTE_PIECE.test(piece) ? PieceType.Byte : PieceType.Normal;
  });
}

export function bpeMerges(vocab: SentencePieceVocab): [string, string][] {
  const idOf = new Map<string, number>();
  vocab.pieces.forEach((piece, id) => {
    if (vocab.types[id] === PieceType.Normal || vocab.types[id] === PieceType.UserDefined) idOf.set(piece, id);
  });
  const merges: { left: string; right: string; score: number }[] = [];
  for (const [piece, id] of idOf) {
    const chars = [...piece];
    const local: { left: string; right: string; score: number; leftId: number; rightId: number }[] = [];
    for (let split = 1; split < chars.length; split++) {
      const left = chars.slice(0, split).join('');
      const right = chars.slice(split).join('');
      const leftId = idOf.get(left);
      const rightId = idOf.get(right);
      if (leftId !== undefined && rightId !== undefined) local.push({ left, right, score: vocab.scores[id], leftId, rightId });
    }
    local.sort((a, b) => a.leftId - b.leftId || a.rightId - b.rightId);
    merges.push(...local);
  }
  merges.sort((a, b) => b.score - a.score); // stable: equal scores keep vocabulary order
  return merges.map((m) => [m.left, m.right]);
}

export interface TokenizerFiles {
  tokenizerJson: object;
  tokenizerConfig: object;
}

export function sentencePieceToTokenizer(vocab: SentencePieceVocab, options: { maxLength: number; addBos?: boolean }): TokenizerFiles {
  const addBos = options.addBos ?? true;
  const bos = vocab.pieces[vocab.bosId];
  const eos = vocab.pieces[vocab.eosId];
  const unk = vocab.pieces[vocab.unkId];
  const vocabMap: Record<string, number> = {};
  vocab.pieces.forEach((piece, id) => {
    if (!(piece in vocabMap)) vocabMap[piece] = id;
  });
  const special = (id: number) => ({
    id, content: vocab.pieces[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  const specialIds = vocab.pieces.map((_, id) => id).filter((id) => vocab.types[id] === PieceType.Control || vocab.types[id] === PieceType.Unknown);
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialIds.map(special),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: addBos
      ? {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { [bos]: { id: bos, ids: [vocab.bosId], tokens: [bos] } },
        }
      : null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: vocabMap,
      merges: bpeMerges(vocab),
    },
  };
  const tokenizerConfig = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: bos,
    eos_token: eos,
    unk_token: unk,
    add_bos_token: addBos,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: options.maxLength,
  };
  return { tokenizerJson, tokenizerConfig };
}
