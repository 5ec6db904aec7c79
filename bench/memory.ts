// Where a process's resident memory is, for the benchmarks: V8's heap, and on Linux the resident
// pages of /proc/self/smaps grouped by what is mapped.
import fs from 'node:fs';
import { fullCollection } from '../engine/collector.ts';
import { nativeMemory } from '../engine/native.ts';

export interface MemorySnapshot {
  rssMB: number;
  heapUsedMB: number;
  heapCommittedMB: number;
  externalMB: number;
  /** Resident MB by mapping kind (Linux only): anonymous, [heap] (malloc's main arena), device files (/dev/...), other files, the rest. */
  mappings?: Record<'anonymous' | 'brk' | 'device' | 'files' | 'other', number>;
  /** MB glibc's malloc holds in its arenas, in use and free (engine/native.ts; where it was built). */
  malloc?: { heapMB: number; inUseMB: number; freeMB: number };
}

const megabytes = (bytes: number) => Math.round(bytes / 2 ** 20);

function residentByMapping(): MemorySnapshot['mappings'] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/smaps', 'utf8');
  } catch {
    return undefined;
  }
  const kb = { anonymous: 0, brk: 0, device: 0, files: 0, other: 0 };
  let kind: keyof typeof kb = 'other';
  for (const line of text.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      const name = header[1];
      kind = name === '' ? 'anonymous' : name === '[heap]' ? 'brk' : name.startsWith('/dev/') ? 'device' : name.startsWith('/') ? 'files' : 'other';
    } else if (line.startsWith('Rss:')) {
      kb[kind] += Number(line.split(/\s+/)[1]);
    }
  }
  return {
    anonymous: Math.round(kb.anonymous / 1024), brk: Math.round(kb.brk / 1024), device: Math.round(kb.device / 1024),
    files: Math.round(kb.files / 1024), other: Math.round(kb.other / 1024),
  };
}

function mallocHeld(): MemorySnapshot['malloc'] {
  const stats = nativeMemory()?.stats();
  return stats && { heapMB: megabytes(stats.heapBytes), inUseMB: megabytes(stats.inUseBytes), freeMB: megabytes(stats.freeBytes) };
}

export function memorySnapshot(): MemorySnapshot {
  const usage = process.memoryUsage();
  return {
    rssMB: megabytes(usage.rss), heapUsedMB: megabytes(usage.heapUsed), heapCommittedMB: megabytes(usage.heapTotal),
    externalMB: megabytes(usage.external), mappings: residentByMapping(), malloc: mallocHeld(),
  };
}

export function describeSnapshot(s: MemorySnapshot): string {
  const mapped = s.mappings ? `; resident by mapping: anonymous ${s.mappings.anonymous}, malloc brk ${s.mappings.brk}, device ${s.mappings.device}, files ${s.mappings.files}, other ${s.mappings.other}` : '';
  const malloc = s.malloc ? `; malloc arenas ${s.malloc.heapMB}: ${s.malloc.inUseMB} in use, ${s.malloc.freeMB} free` : '';
  return `RSS ${s.rssMB} MB (JS heap ${s.heapUsedMB} used / ${s.heapCommittedMB} committed, external ${s.externalMB}${mapped}${malloc})`;
}

/**
 * Full collections (engine/collector.ts fullCollection) until the JS heap stops shrinking: objects
 * of native addons (WebGPU's buffers, encoders, bind groups) are finalised on the event loop after
 * the collection that finds them dead, and their memory goes in a later one. Returns the JS heap in
 * use (MB) after each; nothing where no collection can be had.
 */
export async function collectGarbage(maxRounds = 6): Promise<number[]> {
  const gc = fullCollection();
  if (!gc) return [];
  const used: number[] = [];
  for (let round = 0; round < maxRounds; round++) {
    gc();
    used.push(megabytes(process.memoryUsage().heapUsed));
    if (round > 0 && used[round] >= used[round - 1]) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return used;
}
