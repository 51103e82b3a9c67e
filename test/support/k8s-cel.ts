/**
 * A small CEL interpreter for the test API server: the subset CRD validation rules use here —
 * literals, `self` field access, `has()`, `size()`, arithmetic, comparisons, `in`, `!`, `&&`, `||`,
 * `?:`. Missing fields raise errors (as in CEL); `has()` tests presence. Not a general CEL.
 */

type Value = unknown;
type Node =
  | { t: "lit"; v: Value }
  | { t: "ident"; name: string }
  | { t: "member"; obj: Node; name: string }
  | { t: "call"; fn: string; target?: Node; args: Node[] }
  | { t: "unary"; op: string; arg: Node }
  | { t: "binary"; op: string; left: Node; right: Node }
  | { t: "cond"; test: Node; then: Node; else: Node }
  | { t: "list"; items: Node[] };

const TOKEN = /\s*(?:(\d+\.\d+)|(\d+)u?|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([A-Za-z_][A-Za-z0-9_]*)|(==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()[\]]))/y;

function tokenize(src: string): string[] {
  const out: string[] = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < src.length) {
    if (/^\s*$/.test(src.slice(TOKEN.lastIndex))) break;
    const start = TOKEN.lastIndex;
    const m = TOKEN.exec(src);
    if (!m) throw new Error(`syntax error at ${start}: ${src.slice(start, start + 10)}`);
    if (m[1] !== undefined) out.push(`#${m[1]}`);
    else if (m[2] !== undefined) out.push(`#${m[2]}`);
    else if (m[3] !== undefined || m[4] !== undefined) out.push(`$${m[3] ?? m[4]}`);
    else out.push((m[5] ?? m[6]) as string);
  }
  return out;
}

const BINARY: Record<string, number> = { "||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, in: 3, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5 };

function parse(src: string): Node {
  const toks = tokenize(src);
  let i = 0;
  const peek = () => toks[i];
  const next = () => toks[i++];
  const expect = (t: string) => {
    if (next() !== t) throw new Error(`expected '${t}' in ${src}`);
  };
  const expr = (): Node => {
    const test = binary(1);
    if (peek() !== "?") return test;
    next();
    const then = expr();
    expect(":");
    return { t: "cond", test, then, else: expr() };
  };
  const binary = (minPrec: number): Node => {
    let left = unary();
    for (;;) {
      const op = peek();
      const prec = op !== undefined ? BINARY[op] : undefined;
      if (prec === undefined || prec < minPrec) return left;
      next();
      left = { t: "binary", op: op as string, left, right: binary(prec + 1) };
    }
  };
  const unary = (): Node => {
    if (peek() === "!" || peek() === "-") {
      const op = next() as string;
      return { t: "unary", op, arg: unary() };
    }
    return postfix(primary());
  };
  const args = (): Node[] => {
    const out: Node[] = [];
    expect("(");
    while (peek() !== ")") {
      out.push(expr());
      if (peek() === ",") next();
    }
    expect(")");
    return out;
  };
  const postfix = (node: Node): Node => {
    while (peek() === ".") {
      next();
      const name = next() as string;
      node = peek() === "(" ? { t: "call", fn: name, target: node, args: args() } : { t: "member", obj: node, name };
    }
    return node;
  };
  const primary = (): Node => {
    const tok = next();
    if (tok === undefined) throw new Error(`unexpected end of ${src}`);
    if (tok === "(") {
      const e = expr();
      expect(")");
      return e;
    }
    if (tok === "[") {
      const items: Node[] = [];
      while (peek() !== "]") {
        items.push(expr());
        if (peek() === ",") next();
      }
      expect("]");
      return { t: "list", items };
    }
    if (tok.startsWith("#")) return { t: "lit", v: Number(tok.slice(1)) };
    if (tok.startsWith("$")) return { t: "lit", v: tok.slice(1) };
    if (tok === "true" || tok === "false") return { t: "lit", v: tok === "true" };
    if (tok === "null") return { t: "lit", v: null };
    if (/^[A-Za-z_]/.test(tok)) return peek() === "(" ? { t: "call", fn: tok, args: args() } : { t: "ident", name: tok };
    throw new Error(`unexpected '${tok}' in ${src}`);
  };
  const node = expr();
  if (i !== toks.length) throw new Error(`trailing input in ${src}`);
  return node;
}

function member(obj: Value, name: string): Value {
  if (typeof obj !== "object" || obj === null || !(name in obj)) throw new Error(`no such key: ${name}`);
  return (obj as Record<string, Value>)[name];
}

function evaluate(node: Node, env: Record<string, Value>): Value {
  switch (node.t) {
    case "lit":
      return node.v;
    case "ident":
      if (!(node.name in env)) throw new Error(`undeclared reference to '${node.name}'`);
      return env[node.name];
    case "member":
      return member(evaluate(node.obj, env), node.name);
    case "list":
      return node.items.map((n) => evaluate(n, env));
    case "cond":
      return evaluate(node.test, env) === true ? evaluate(node.then, env) : evaluate(node.else, env);
    case "unary": {
      const v = evaluate(node.arg, env);
      return node.op === "!" ? !v : -(v as number);
    }
    case "call": {
      if (node.fn === "has") {
        const arg = node.args[0];
        if (arg?.t !== "member") throw new Error("has() needs a field selection");
        const obj = evaluate(arg.obj, env);
        return typeof obj === "object" && obj !== null && arg.name in obj;
      }
      if (node.fn === "size") {
        const v = evaluate(node.target ?? (node.args[0] as Node), env);
        if (typeof v === "string" || Array.isArray(v)) return v.length;
        if (typeof v === "object" && v !== null) return Object.keys(v).length;
        throw new Error("size() of a non-collection");
      }
      throw new Error(`unknown function ${node.fn}`);
    }
    case "binary": {
      if (node.op === "&&" || node.op === "||") {
        const l = evaluate(node.left, env);
        if (node.op === "&&" ? l === false : l === true) return l;
        return evaluate(node.right, env);
      }
      const l = evaluate(node.left, env) as number;
      const r = evaluate(node.right, env) as number;
      switch (node.op) {
        case "==":
          return JSON.stringify(l) === JSON.stringify(r);
        case "!=":
          return JSON.stringify(l) !== JSON.stringify(r);
        case "<":
          return l < r;
        case "<=":
          return l <= r;
        case ">":
          return l > r;
        case ">=":
          return l >= r;
        case "+":
          return l + r;
        case "-":
          return l - r;
        case "*":
          return l * r;
        case "/":
          if (r === 0) throw new Error("division by zero");
          return Number.isInteger(l) && Number.isInteger(r) ? Math.trunc(l / r) : l / r;
        case "%":
          if (r === 0) throw new Error("modulus by zero");
          return l % r;
        case "in":
          return Array.isArray(r) ? (r as unknown[]).includes(l) : typeof r === "object" && r !== null && String(l) in (r as object);
      }
      throw new Error(`unknown operator ${node.op}`);
    }
  }
}

/** Evaluates `src` with the given variables (`self`, ...). Throws on errors, as CEL does. */
export function evaluateCel(src: string, env: Record<string, Value>): Value {
  return evaluate(parse(src), env);
}
