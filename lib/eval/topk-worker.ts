// Worker thread of the cosine top-k search: scans query blocks of a shared job (see topk.ts) and says when done.
import { parentPort, workerData } from 'node:worker_threads';
import { scanBlocks, type ScanJob } from './topk.js';

scanBlocks(workerData as ScanJob);
parentPort?.postMessage('done');
