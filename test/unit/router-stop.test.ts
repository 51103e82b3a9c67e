import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IncrementalDetokenizer } from "../../router/detokenizer.js";
import { StopMatcher } from "../../router/stop.js";

/** Feeds `deltas` through a matcher; returns the text released and whether it stopped. */
function run(stops: string[], deltas: string[]): { text: string; stopped: boolean; releases: string[] } {
  const m = new StopMatcher(stops);
  const releases: string[] = [];
  let stopped = false;
  for (const d of deltas) {
    const r = m.push(d);
    releases.push(r.text);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped) releases.push(m.flush());
  return { text: releases.join(""), stopped, releases };
}

describe("stop strings", () => {
  const cases: { name: string; stops: string[]; deltas: string[]; text: string; stopped: boolean }[] = [
    { name: "no stop strings pass text through", stops: [], deltas: ["ab", "cd"], text: "abcd", stopped: false },
    { name: "a stop string inside one delta cuts right before it", stops: ["END"], deltas: ["abcENDxyz"], text: "abc", stopped: true },
    { name: "a stop string split across deltas never leaks", stops: ["END"], deltas: ["abE", "N", "Dzz"], text: "ab", stopped: true },
    { name: "a partial match that does not complete is released", stops: ["END"], deltas: ["abE", "Nx", "y"], text: "abENxy", stopped: false },
    { name: "the earliest of several stop strings wins", stops: ["xyz", "b"], deltas: ["axyzb"], text: "a", stopped: true },
    { name: "a stop string at the very start yields empty text", stops: ["\n"], deltas: ["\nhello"], text: "", stopped: true },
    { name: "held text is flushed at the end of the sequence", stops: ["END"], deltas: ["foo E"], text: "foo E", stopped: false },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = run(c.stops, c.deltas);
      assert.equal(r.text, c.text);
      assert.equal(r.stopped, c.stopped);
    });
  }

  it("holds back only what could still become a stop string", () => {
    const r = run(["END"], ["abcE", "Nd"]);
    assert.deepEqual(r.releases, ["abc", "ENd", ""]);
  });
});

describe("incremental detokenizer", () => {
  // a toy byte-level vocabulary: token i is the byte i; decode is UTF-8 with replacement chars
  const decode = (ids: readonly number[]) => new TextDecoder().decode(Uint8Array.from(ids));

  it("releases a multi-byte character only once all its bytes arrived", () => {
    const d = new IncrementalDetokenizer(decode);
    const bytes = [...new TextEncoder().encode("a€b")];
    const deltas = bytes.map((b) => d.push([b]));
    assert.deepEqual(deltas, ["a", "", "", "€", "b"]);
  });

  it("the deltas concatenate to the decoded whole, flush included", () => {
    const text = "héllo wörld ✓";
    const d = new IncrementalDetokenizer(decode);
    const bytes = [...new TextEncoder().encode(text)];
    let out = "";
    for (let i = 0; i < bytes.length; i += 3) out += d.push(bytes.slice(i, i + 3));
    out += d.flush();
    assert.equal(out, text);
  });
});
