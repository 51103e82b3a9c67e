/** Kubernetes label selectors (the string form used in `?labelSelector=`), for the test API server. */

type Requirement =
  | { op: "eq" | "neq"; key: string; value: string }
  | { op: "in" | "notin"; key: string; values: string[] }
  | { op: "exists" | "notexists"; key: string };

/** Parses `a=b,c!=d,e in (x,y),!f,g`; throws on syntax it does not know. */
export function parseLabelSelector(selector: string): Requirement[] {
  const reqs: Requirement[] = [];
  // split on commas outside parentheses
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of selector) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  for (const raw of parts.map((p) => p.trim()).filter(Boolean)) {
    let m: RegExpMatchArray | null;
    if ((m = raw.match(/^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/))) {
      reqs.push({ op: m[2] as "in" | "notin", key: m[1] ?? "", values: (m[3] ?? "").split(",").map((v) => v.trim()) });
    } else if ((m = raw.match(/^([^\s!=]+)\s*(==|=|!=)\s*(\S*)$/))) {
      reqs.push({ op: m[2] === "!=" ? "neq" : "eq", key: m[1] ?? "", value: m[3] ?? "" });
    } else if ((m = raw.match(/^!\s*(\S+)$/))) {
      reqs.push({ op: "notexists", key: m[1] ?? "" });
    } else if (/^\S+$/.test(raw)) {
      reqs.push({ op: "exists", key: raw });
    } else {
      throw new Error(`unable to parse requirement: ${raw}`);
    }
  }
  return reqs;
}

export function matchesLabels(reqs: readonly Requirement[], labels: Readonly<Record<string, string>> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case "eq":
        return v === r.value;
      case "neq":
        return v !== r.value;
      case "in":
        return has && r.values.includes(v ?? "");
      case "notin":
        return !has || !r.values.includes(v ?? "");
      case "exists":
        return has;
      case "notexists":
        return !has;
    }
  });
}

/** Field selectors: only `metadata.name=` and `metadata.namespace=` (what controllers use most). */
export function matchesFields(selector: string | undefined, obj: { metadata?: { name?: string; namespace?: string } }): boolean {
  if (!selector) return true;
  return selector.split(",").every((part) => {
    const m = part.trim().match(/^(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw new Error(`field label not supported: ${part}`);
    const actual = m[1] === "metadata.name" ? obj.metadata?.name : obj.metadata?.namespace;
    return m[2] === "!=" ? actual !== m[3] : actual === m[3];
  });
}
