// The paged KV cache (kernels/backend.ts KVPages): entry r of `pages` is the offset, in `pages`,
// of row r's block table; position t of the row lives in slot table[t / block_size] · block_size
// + t % block_size. Each layer's keys and values are (kv_heads × slots × head_dim). The kernel
// declares `pages`.

fn page_slot(r: u32, t: u32, block_size: u32) -> u32 {
  let table = u32(pages[r]);
  return u32(pages[table + t / block_size]) * block_size + t % block_size;
}
