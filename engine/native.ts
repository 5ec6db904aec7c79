// The native memory helper (engine/native/memory.c), where it was built at install: glibc's
// malloc_trim and mallinfo2. Without it the engine runs the same, but the pages malloc freed stay
// resident until the process reuses them.
import { createRequire } from 'node:module';

export interface MallocStats {
  /** Bytes malloc obtained from the system for its arenas. */
  heapBytes: number;
  inUseBytes: number;
  /** Free inside the arenas: resident until trimmed or reused. */
  freeBytes: number;
  /** Large blocks mapped one by one (returned to the system when freed). */
  mmappedBytes: number;
}

export interface NativeMemory {
  /** Returns the free pages of malloc's arenas to the system; true when some were. */
  trim(): boolean;
  /** Undefined where glibc has no mallinfo2 (before 2.33). */
  stats(): MallocStats | undefined;
}

let loaded: NativeMemory | null | undefined;

/** The helper, or null where it was not built (not Linux, no compiler at install). */
export function nativeMemory(): NativeMemory | null {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)('./native/build/blr_memory.node') as NativeMemory;
    } catch {
      loaded = null;
    }
  }
  return loaded;
}
