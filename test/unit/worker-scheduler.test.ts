import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Scheduler, type ScheduleResult } from "../../worker/scheduler.js";
import { Sequence } from "../../worker/sequence.js";
import { KvBlockPool, SlotPool } from "../../worker/slots.js";

/** A scheduler over small pools: `slots` state slots, `blocks` KV blocks of `blockSize` tokens. */
function scheduler(o: { slots?: number; blocks?: number; blockSize?: number; budget?: number; maxRunning?: number } = {}) {
  const slots = o.slots ?? 4;
  return new Scheduler({ maxRunning: o.maxRunning ?? slots, stepTokenBudget: o.budget ?? 64 }, new SlotPool(slots), new KvBlockPool(o.blocks ?? 64, o.blockSize ?? 4));
}

let nextId = 0;
function seq(promptLength: number, maxTokens = 8, stop: number[] = []): Sequence {
  return new Sequence({
    requestId: `r${nextId++}`,
    attempt: 0,
    promptTokens: Array.from({ length: promptLength }, (_, i) => i + 1),
    maxTokens,
    sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
    ignoreEos: false,
    stopTokenIds: new Set(stop),
    arrivalMs: 0,
  });
}

/** Runs one step, sampling `token` for every sampled item. */
function step(s: Scheduler, token = 100): ScheduleResult {
  const plan = s.schedule();
  s.postprocess(plan, plan.items.map((it) => (it.sample ? token : -1)));
  return plan;
}

const shape = (plan: ScheduleResult) => plan.items.map((it) => [it.seq.requestId, it.start, it.numTokens, it.sample]);

describe("worker scheduler", () => {
  const cases: { name: string; budget: number; prompts: number[]; want: [number, number, boolean][][] }[] = [
    { name: "a short prompt is prefilled in one step and sampled", budget: 64, prompts: [5], want: [[[0, 5, true]]] },
    { name: "a long prompt is prefilled in budget-sized chunks, sampled only after the last", budget: 4, prompts: [10], want: [[[0, 4, false]], [[4, 4, false]], [[8, 2, true]], [[10, 1, true]]] },
    { name: "two prompts share the budget first come first served", budget: 6, prompts: [4, 4], want: [[[0, 4, true], [0, 2, false]], [[4, 1, true], [2, 2, true]]] },
  ];
  for (const c of cases) {
    it(`chunked prefill - ${c.name}`, () => {
      const s = scheduler({ budget: c.budget });
      const seqs = c.prompts.map((p) => seq(p, 8));
      for (const q of seqs) s.add(q);
      for (const want of c.want) {
        const plan = step(s);
        assert.deepEqual(shape(plan), want.map(([start, n, sample], i) => [plan.items[i]?.seq.requestId, start, n, sample]));
      }
    });
  }

  it("decodes run before prefill chunks so a long prompt does not stall them", () => {
    const s = scheduler({ budget: 8 });
    const a = seq(3);
    s.add(a);
    step(s); // a prefilled, now decoding
    s.add(seq(50));
    const plan = step(s);
    assert.deepEqual(plan.items.map((it) => [it.seq === a, it.numTokens]), [[true, 1], [false, 7]]);
  });

  it("caps the running batch at maxRunning and admits the rest as slots free", () => {
    const s = scheduler({ slots: 2 });
    const seqs = [seq(2, 1), seq(2, 1), seq(2, 1)];
    for (const q of seqs) s.add(q);
    const first = step(s);
    assert.equal(first.items.length, 2);
    assert.equal(seqs[0]?.finishReason, "length");
    const second = step(s);
    assert.deepEqual(second.items.map((it) => it.seq), [seqs[2]]);
  });

  it("finishes at an eos id with reason stop and at max tokens with reason length", () => {
    const s = scheduler();
    const byEos = seq(2, 8, [100]);
    const byLength = seq(2, 2);
    s.add(byEos);
    s.add(byLength);
    step(s, 100);
    assert.equal(byEos.finishReason, "stop");
    step(s, 7);
    assert.equal(byLength.finishReason, "length");
    assert.deepEqual(byLength.tokens.slice(2), [100, 7]);
    assert.equal(s.hasWork, false);
    assert.equal(s.slots.numFree, 4);
    assert.equal(s.kv.numFree, 64);
  });

  it("never admits a prompt whose first chunk lacks KV blocks; it waits at the head of the queue", () => {
    const s = scheduler({ blocks: 2, blockSize: 4 });
    const big = seq(6, 2);
    const small = seq(2, 1);
    s.add(big);
    s.add(small);
    const plan = step(s);
    assert.deepEqual(plan.items.map((it) => it.seq), [big]);
    assert.equal(s.waiting[0], small);
  });

  it("preempts the youngest running sequence when a decode needs a block, and recomputes it later with its tokens kept", () => {
    // 3 blocks of 2 tokens: a (prompt 2) and b (prompt 2) fill 2 blocks; each decode past 2 tokens needs a new block
    const s = scheduler({ blocks: 3, blockSize: 2, budget: 16 });
    const a = seq(2, 4);
    const b = seq(2, 4);
    s.add(a);
    s.add(b);
    step(s); // both prefilled (2 blocks), each sampled 1 token → 3 tokens each
    const plan = step(s); // a needs block 3 (ok); b needs a 4th → b is preempted
    assert.deepEqual(plan.preempted, [b]);
    assert.equal(b.status, "waiting");
    assert.equal(b.numComputed, 0);
    assert.equal(b.numOutputTokens, 1, "generated tokens survive preemption");
    while (s.hasWork) step(s);
    assert.equal(a.finishReason, "length");
    assert.equal(b.finishReason, "length");
    assert.equal(b.numOutputTokens, 4);
    assert.equal(s.kv.numFree, 3);
  });

  it("a cancelled sequence is dropped at the next schedule and its resources are freed", () => {
    const s = scheduler();
    const a = seq(3);
    s.add(a);
    step(s);
    assert.equal(s.cancel(a.requestId), true);
    const plan = s.schedule();
    assert.deepEqual(plan.cancelled, [a]);
    assert.equal(a.finishReason, "cancelled");
    assert.equal(plan.items.length, 0);
    assert.equal(s.slots.numFree, 4);
    assert.equal(s.cancel("nobody"), false);
  });

  it("a token sampled for a sequence cancelled during the step is discarded", () => {
    const s = scheduler();
    const a = seq(3);
    s.add(a);
    const plan = s.schedule();
    s.cancel(a.requestId);
    const outcomes = s.postprocess(plan, [42]);
    assert.deepEqual(outcomes, []);
    assert.equal(a.numOutputTokens, 0);
  });

  it("abort ends every sequence of a failed step and frees what they held", () => {
    const s = scheduler();
    s.add(seq(3));
    s.add(seq(3));
    const plan = s.schedule();
    const ended = s.abort(plan.items);
    assert.equal(ended.length, 2);
    assert.equal(s.hasWork, false);
    assert.equal(s.kv.numFree, 64);
  });

  it("refuses a configuration whose budget cannot hold one decode per running sequence", () => {
    assert.throws(() => scheduler({ slots: 8, budget: 4 }), /stepTokenBudget/);
  });
});

describe("worker scheduler - MTP drafts", () => {
  it("a decode verifies the last step's drafts and asks for new ones; accepted drafts and the sampled token are emitted", () => {
    const s = scheduler();
    const a = seq(3, 10);
    s.add(a);
    let plan = s.schedule(2);
    assert.equal(plan.items[0]?.draftTokens, 2, "the chunk ending the prompt asks for drafts");
    s.postprocess(plan, [7], [0], [8, 9]);
    assert.deepEqual(a.drafts, [8, 9]);
    plan = s.schedule(2);
    assert.deepEqual([plan.items[0]?.numTokens, plan.items[0]?.numDrafts, plan.items[0]?.draftTokens], [3, 2, 2]);
    const out = s.postprocess(plan, [5], [1], [6, 6]);
    assert.deepEqual(out[0]?.tokens, [8, 5], "one draft accepted, then the engine's token");
    assert.deepEqual(out[0]?.verified, { numDrafts: 2, numAccepted: 1 });
    assert.equal(a.numComputed, 3 + 1 + 1, "the slot holds the prompt, the fed token and the accepted draft");
    assert.deepEqual(a.tokens.slice(3), [7, 8, 5]);
  });

  it("stops at a stop id inside the accepted drafts and at max_tokens", () => {
    const s = scheduler();
    const a = seq(2, 10, [42]);
    s.add(a);
    s.postprocess(s.schedule(3), [1], [0], [2, 42, 3]);
    const out = s.postprocess(s.schedule(3), [9], [3], [0, 0, 0]);
    assert.deepEqual(out[0]?.tokens, [2, 42]);
    assert.equal(out[0]?.finishReason, "stop");
    const b = seq(2, 3);
    s.add(b);
    s.postprocess(s.schedule(3), [1], [0], [2, 3, 4]);
    const plan = s.schedule(3);
    assert.equal(plan.items[0]?.numDrafts, 1, "never verifies past max_tokens");
    const end = s.postprocess(plan, [9], [1], []);
    assert.deepEqual(end[0]?.tokens, [2, 9]);
    assert.equal(end[0]?.finishReason, "length");
  });

  it("drafts use only free KV blocks and never preempt: a sequence short of blocks decodes plainly", () => {
    const s = scheduler({ blocks: 2, blockSize: 4 });
    const a = seq(7, 10);
    s.add(a);
    s.postprocess(s.schedule(3), [1], [0], []); // 8 tokens: both blocks used, no room for drafts
    a.drafts = [2, 3, 4];
    const plan = s.schedule(3);
    assert.equal(plan.preempted.length, 0);
    assert.deepEqual([plan.items[0]?.numTokens, plan.items[0]?.numDrafts, plan.items[0]?.draftTokens], [1, 0, 0]);
  });

  it("drafts share what budget is left after every decode's own token", () => {
    const s = scheduler({ budget: 5 });
    const q = [seq(1, 10), seq(1, 10)];
    for (const x of q) s.add(x);
    s.postprocess(s.schedule(3), [1, 1], [0, 0], [5, 5, 5, 6, 6, 6]);
    const plan = s.schedule(3);
    assert.deepEqual(plan.items.map((it) => it.numDrafts), [1, 1], "(5 - 2) / 2 = 1 draft each");
  });
});

describe("worker scheduler - the router's speculation cap", () => {
  it("a sequence with maxDraftTokens 0 never asks for or verifies drafts", () => {
    const s = scheduler();
    const a = new Sequence({ requestId: "capped", attempt: 0, promptTokens: [1, 2], maxTokens: 8, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, ignoreEos: false, stopTokenIds: new Set(), arrivalMs: 0, maxDraftTokens: 0 });
    s.add(a);
    const plan = s.schedule(3);
    assert.equal(plan.items[0]?.draftTokens, 0);
    s.postprocess(plan, [5], [0], []);
    assert.equal(s.schedule(3).items[0]?.numTokens, 1);
  });
});
