#!/usr/bin/env node
// The `blr` command: runs the TypeScript CLI through tsx's loader (no build step to go stale).
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
