import { TimeoutLink, TimeoutQueue } from "../../shared/timeout_queue.ts";

function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${msg ?? "assertEquals"}: expected ${e}, got ${a}`);
}

class Entry extends TimeoutLink {
  constructor(readonly name: string, readonly fired: string[]) {
    super();
  }
  onTimeout(): void {
    this.fired.push(this.name);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("timeout queue: entries expire in arming order; cancelled ones never fire", async () => {
  const q = new TimeoutQueue(30);
  const fired: string[] = [];
  const [a, b, c] = ["a", "b", "c"].map((n) => new Entry(n, fired));
  q.arm(a);
  q.arm(b);
  q.arm(c);
  assertEquals(q.size, 3);
  b.disarm();
  assertEquals([b.armed, q.size], [false, 2]);
  await sleep(80);
  assertEquals(fired, ["a", "c"]);
  assertEquals([a.armed, c.armed, q.size], [false, false, 0]);
  q.clear();
});

Deno.test("timeout queue: re-arming restarts the timeout; another queue takes the link over", async () => {
  const short = new TimeoutQueue(40);
  const long = new TimeoutQueue(10_000);
  const fired: string[] = [];
  const a = new Entry("a", fired);
  const b = new Entry("b", fired);
  short.arm(a);
  short.arm(b);
  await sleep(25);
  short.arm(a); // now expires after b
  long.arm(b); // leaves `short`
  assertEquals([short.size, long.size], [1, 1]);
  await sleep(30);
  assertEquals(fired, [], "a was re-armed 25 ms in, b moved to the long queue");
  await sleep(60);
  assertEquals(fired, ["a"]);
  long.clear();
  short.clear();
  assertEquals([long.size, b.armed], [0, false]);
});

Deno.test("timeout queue: a throwing handler does not stop the others; clear() drops all", async () => {
  const q = new TimeoutQueue(20);
  const fired: string[] = [];
  class Bad extends TimeoutLink {
    onTimeout(): void {
      fired.push("bad");
      throw new Error("boom");
    }
  }
  q.arm(new Bad());
  q.arm(new Entry("after", fired));
  await sleep(60);
  assertEquals(fired, ["bad", "after"]);
  const never = new Entry("never", fired);
  q.arm(never);
  q.clear();
  await sleep(40);
  assertEquals([fired.length, never.armed], [2, false]);
});
