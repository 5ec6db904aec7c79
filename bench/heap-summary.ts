// What a V8 heap snapshot holds, by kind of object, and what grew between two snapshots: for
// finding what a long run keeps alive (bench/load.ts --heap-snapshots DIR writes them).
//
//   npx tsx bench/heap-summary.ts AFTER.heapsnapshot [BEFORE.heapsnapshot] [--top 25]
import fs from 'node:fs';
import { parseArgs } from 'node:util';

interface Entry { count: number; bytes: number }

/** Self sizes summed by (node type, constructor or name), as DevTools' "summary" view groups them. */
function summarize(file: string): Map<string, Entry> {
  // Read as bytes, not as one string: a snapshot of a few hundred MB of heap is larger than the
  // longest string V8 makes. Its layout: {"snapshot":{meta…},"nodes":[…],"edges":[…],…,"strings":[…]}.
  const bytes = fs.readFileSync(file);
  const nodesAt = bytes.indexOf('"nodes":[');
  const header = JSON.parse(`${bytes.subarray(0, nodesAt).toString('utf8').replace(/,\s*$/, '')}}`) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  };
  const nodes: number[] = [];
  let value = 0;
  let digits = false;
  for (let i = nodesAt + '"nodes":['.length; bytes[i] !== 0x5d; i++) {
    const c = bytes[i];
    if (c >= 0x30 && c <= 0x39) {
      value = value * 10 + (c - 0x30);
      digits = true;
    } else if (digits) {
      nodes.push(value);
      value = 0;
      digits = false;
    }
  }
  if (digits) nodes.push(value);
  const stringsAt = bytes.indexOf('"strings":[');
  const strings = JSON.parse(bytes.subarray(stringsAt + '"strings":'.length, bytes.lastIndexOf(']') + 1).toString('utf8')) as string[];
  const fields = header.snapshot.meta.node_fields;
  const typeNames = header.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const groups = new Map<string, Entry>();
  for (let i = 0; i < nodes.length; i += width) {
    const type = typeNames[nodes[i + typeAt]];
    // Strings and code are grouped by type alone; objects by their constructor's name.
    const key = type === 'object' || type === 'closure' || type === 'native' ? `${type} ${strings[nodes[i + nameAt]].slice(0, 80)}` : type;
    const entry = groups.get(key) ?? { count: 0, bytes: 0 };
    entry.count++;
    entry.bytes += nodes[i + sizeAt];
    groups.set(key, entry);
  }
  return groups;
}

const { values, positionals } = parseArgs({ options: { top: { type: 'string', default: '25' } }, allowPositionals: true, strict: true });
if (positionals.length < 1 || positionals.length > 2) throw new Error('usage: heap-summary.ts AFTER.heapsnapshot [BEFORE.heapsnapshot] [--top N]');
const after = summarize(positionals[0]);
const before = positionals[1] ? summarize(positionals[1]) : new Map<string, Entry>();
const rows = [...after.entries()].map(([key, a]) => {
  const b = before.get(key) ?? { count: 0, bytes: 0 };
  return { key, count: a.count, bytes: a.bytes, countGrowth: a.count - b.count, bytesGrowth: a.bytes - b.bytes };
});
const total = (m: Map<string, Entry>) => [...m.values()].reduce((n, e) => n + e.bytes, 0);
console.log(`heap: ${(total(after) / 2 ** 20).toFixed(1)} MB${positionals[1] ? ` (before: ${(total(before) / 2 ** 20).toFixed(1)} MB)` : ''}`);
const by = positionals[1] ? 'bytesGrowth' : 'bytes';
rows.sort((x, y) => y[by] - x[by]);
console.log('MB | growth MB | count | growth count | kind');
for (const r of rows.slice(0, Number(values.top))) {
  console.log(`${(r.bytes / 2 ** 20).toFixed(2)} | ${(r.bytesGrowth / 2 ** 20).toFixed(2)} | ${r.count} | ${r.countGrowth} | ${r.key}`);
}
