import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { type CommandRunner, HostChangeError, HostJournal } from "../../shared/host/journal.ts";

/** A runner that records commands and keeps a fake "host" state: a set of applied items. */
class FakeHost implements CommandRunner {
  readonly log: string[] = [];
  readonly state = new Set<string>();
  /** Snapshots of the journal file taken just before each command ran. */
  readonly journalAtRun: string[] = [];
  failOn: string | null = null;
  constructor(private readonly journalPath: string) {}
  run(argv: readonly string[]): Promise<{ code: number; stderr: string }> {
    const [verb, item] = argv;
    this.log.push(argv.join(" "));
    try {
      this.journalAtRun.push(Deno.readTextFileSync(this.journalPath));
    } catch {
      this.journalAtRun.push("");
    }
    if (this.failOn === argv.join(" ")) return Promise.resolve({ code: 2, stderr: "refused" });
    if (verb === "add") {
      if (this.state.has(item)) return Promise.resolve({ code: 2, stderr: "exists" });
      this.state.add(item);
    } else if (verb === "del") {
      if (!this.state.delete(item)) return Promise.resolve({ code: 2, stderr: "no such item" });
    }
    return Promise.resolve({ code: 0, stderr: "" });
  }
}

const change = (item: string) => ({
  kind: "command" as const,
  what: `item ${item}`,
  apply: ["add", item],
  undo: ["del", item],
});

async function tmp(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "ostp-journal-" });
}

Deno.test("journal: the intent is on disk before the change runs; undo runs in reverse", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/j/tun0.jsonl`;
    const host = new FakeHost(path);
    const { journal, recovered } = await HostJournal.open(path, { runner: host });
    assertEquals(recovered, null);
    for (const i of ["a", "b", "c"]) await journal.apply(change(i));
    for (const [n, i] of ["a", "b", "c"].entries()) {
      assert(host.journalAtRun[n].includes(`"apply":["add","${i}"]`), `intent of ${i} first`);
    }
    assertEquals([...host.state], ["a", "b", "c"]);
    const report = await journal.undoAll();
    assertEquals(report.undone, ["item c", "item b", "item a"]);
    assertEquals(report.failed, []);
    assertEquals(host.state.size, 0);
    assertEquals(host.log.slice(3), ["del c", "del b", "del a"]);
    await assertRejects(() => Deno.stat(path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: a crashed run's changes are undone by the next open, a torn line ignored", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    const first = await HostJournal.open(path, { runner: host, pid: 1111, isAlive: () => false });
    await first.journal.apply(change("a"));
    await first.journal.apply(change("b"));
    // The process dies mid-write: a torn line follows.
    await Deno.writeTextFile(path, '{"t":"intent","seq":3,"chan', { append: true });
    const second = await HostJournal.open(path, { runner: host, pid: 2222, isAlive: () => false });
    assertEquals(second.recovered?.undone, ["item b", "item a"]);
    assertEquals(host.state.size, 0);
    assertEquals(second.journal.size, 0);
    await second.journal.undoAll();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: a change recorded but never made (crash between) undoes quietly", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    const lines = [
      { t: "header", v: 1, pid: 77, started: "", owner: "test" },
      { t: "intent", seq: 1, change: change("a") },
      { t: "applied", seq: 1 },
      { t: "intent", seq: 2, change: change("b") },
    ];
    host.state.add("a");
    await Deno.writeTextFile(path, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    const report = await HostJournal.recover(path, { runner: host, isAlive: () => false });
    assertEquals(report?.undone, ["item a"]);
    assertEquals(report?.failed, [], "the never-made change b is not a failure");
    assertEquals(host.log, ["del b", "del a"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: an undo that fails is reported and the rest still undone", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    const { journal } = await HostJournal.open(path, { runner: host });
    await journal.apply(change("a"));
    await journal.apply(change("b"));
    host.failOn = "del b";
    const report = await journal.undoAll();
    assertEquals(report.undone, ["item a"]);
    assertEquals(report.failed.map((f) => f.what), ["item b"]);
    assert(report.failed[0].error.includes("refused"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: a failed change throws HostChangeError and is still undone harmlessly", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    const { journal } = await HostJournal.open(path, { runner: host });
    await journal.apply(change("a"));
    host.failOn = "add b";
    await assertRejects(() => journal.apply(change("b")), HostChangeError);
    const report = await journal.undoAll();
    assertEquals(report.undone, ["item a"]);
    assertEquals(report.failed, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: a live owner's journal is refused, not undone under it", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    await HostJournal.open(path, { runner: host, pid: 4242 });
    const j = await HostJournal.open(path, { runner: host, pid: 4242 }).then((r) => r.journal);
    await j.apply(change("a"));
    const err = await HostJournal.recover(path, {
      runner: host,
      pid: 1,
      isAlive: (p) => p === 4242,
    }).then(() => null, (e: Error) => e);
    assert(err?.message.includes("still running"), `refused: ${err?.message}`);
    assert(host.state.has("a"));
    await j.undoAll();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: file changes restore the content, the absence or the symlink exactly", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    await Deno.writeTextFile(`${dir}/resolv.conf`, "nameserver 192.0.2.53\n", { mode: 0o644 });
    await Deno.writeTextFile(`${dir}/real`, "x");
    await Deno.symlink(`${dir}/real`, `${dir}/link`);
    const first = await HostJournal.open(path, { runner: host, pid: 9, isAlive: () => false });
    const edit = (p: string) => ({
      kind: "file" as const,
      what: p,
      path: `${dir}/${p}`,
      content: "ours\n",
    });
    for (const p of ["resolv.conf", "new.conf", "link"]) await first.journal.apply(edit(p));
    assertEquals(await Deno.readTextFile(`${dir}/resolv.conf`), "ours\n");
    assert(!(await Deno.lstat(`${dir}/link`)).isSymlink, "the symlink was replaced by a file");
    // Crash: the next run restores.
    const second = await HostJournal.open(path, { runner: host, pid: 10, isAlive: () => false });
    assertEquals(second.recovered?.failed, []);
    assertEquals(await Deno.readTextFile(`${dir}/resolv.conf`), "nameserver 192.0.2.53\n");
    assertEquals((await Deno.stat(`${dir}/resolv.conf`)).mode! & 0o777, 0o644);
    await assertRejects(() => Deno.stat(`${dir}/new.conf`), Deno.errors.NotFound);
    assertEquals(await Deno.readLink(`${dir}/link`), `${dir}/real`);
    await second.journal.undoAll();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("journal: dry run prints every change and changes nothing", async () => {
  const dir = await tmp();
  try {
    const path = `${dir}/tun0.jsonl`;
    const host = new FakeHost(path);
    const lines: string[] = [];
    const { journal } = await HostJournal.open(path, {
      runner: host,
      dryRun: (l) => lines.push(l),
    });
    await journal.apply(change("a"));
    await journal.apply({ kind: "file", what: "resolver", path: `${dir}/r`, content: "x" });
    assertEquals(lines, ["item a: add a", `resolver: write ${dir}/r`]);
    assertEquals(host.log, []);
    await assertRejects(() => Deno.stat(path), Deno.errors.NotFound);
    await assertRejects(() => Deno.stat(`${dir}/r`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
