/**
 * Entry point of a server worker thread (docs/workers.md): hands every
 * message from the main thread to a {@link WorkerNode}. `deno compile` embeds
 * it with `--include server/worker_main.ts` (deno.json "compile").
 * @module
 */

import { WorkerNode } from "./worker_node.ts";
import type { FromWorker, ToWorker } from "./worker_protocol.ts";

/** The parts of a worker's global scope used here. */
interface WorkerScope {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
}

const scope = self as unknown as WorkerScope;
const node = new WorkerNode((m, transfer) => scope.postMessage(m, transfer ?? []));
scope.onmessage = (e) => node.receive(e.data);
