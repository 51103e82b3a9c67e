#!/usr/bin/env python3
"""Train the demo model test/fixtures/demo-chat: a small Nemotron-H (Mamba-2 / attention / LatentMoE)
with one MTP block (pattern "*E", as in Nemotron 3 Super), its own byte-level BPE tokenizer and a
ChatML chat template with Nemotron 3 tool calls.

Three steps:

  1. here (any Debian machine, standard library only): collect the text corpus from files that
     Debian packages installed on this machine (man pages rendered with man-db/groff, GNU info
     manuals, /usr/share/common-licenses, /usr/share/doc/*/copyright and README files, the package
     descriptions in /var/lib/dpkg/status) into a git-ignored folder:

         python3 scripts/train-demo.py collect --out .train

  2. on the GPU machine (torch, transformers 5.17, tokenizers, numpy): generate the synthetic
     agent-style conversations (tool calls in the Nemotron 3 format, arithmetic, JSON, questions
     about the collected manuals), train the tokenizer and the model, export it in the released
     checkpoint layout (backbone.*, per-expert tensors, mtp.*), record transformers' reference logits
     for the parity test, measure MTP acceptance and print a few generations:

         python3 scripts/train-demo.py train --data .train --out /tmp/demo-chat --dry-run   # ~1 min
         python3 scripts/train-demo.py train --data .train --out /tmp/demo-chat --deadline EPOCH

  3. here: unpack into test/fixtures/demo-chat and check with `node scripts/run-tests.mjs parity` and
     `python3 scripts/make-fixtures.py --verify test/fixtures` (numpy float64 reference).

The backbone is transformers' NemotronHForCausalLM. The MTP block is this script's own PyTorch module
(class Mtp) whose state-dict names are those of the released Super checkpoint:

  mtp.layers.0.{enorm,hnorm}.weight [H], mtp.layers.0.eh_proj.weight [H, 2H],
  mtp.layers.0.norm.weight, mtp.layers.0.mixer.{q,k,v,o}_proj.weight          (attention, "*")
  mtp.layers.1.norm.weight, mtp.layers.1.mixer.gate.weight, .gate.e_score_correction_bias (f32),
  mtp.layers.1.mixer.experts.{e}.{up,down}_proj.weight, .shared_experts.{up,down}_proj.weight,
  mtp.layers.1.mixer.fc{1,2}_latent_proj.weight, mtp.layers.1.final_layernorm.weight   (LatentMoE, "E")

MTP forward for position i (vLLM's nemotron_h_mtp.py and Megatron agree):
  u = eh_proj([enorm(embed(tok[i+1])) ; hnorm(h[i])])      h = main model's hidden after norm_f
  x = u + attn(norm0(u));  x = x + moe(norm1(x));  logits = lm_head(final_layernorm(x))  -> tok[i+2]
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------------------------
# Tokens and the chat template
# ----------------------------------------------------------------------------------------------

# ids 0..8 in this order. The first five are special (skipped when decoding); the tool markers are
# ordinary added tokens, so that a decoded reply keeps them (as Nemotron 3's own tokenizer does).
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
ALL_ADDED = SPECIAL_TOKENS + TOOL_TOKENS

TOOLS_PREAMBLE = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
TOOLS_FORMAT = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "</function>\n</tool_call>"
)

# ChatML; with `tools` the system turn lists them the way Nemotron 3's template does, assistant
# `tool_calls` are written as <tool_call><function=...><parameter=...> blocks and `tool` messages go
# back in a user turn inside <tool_response>. render_chat() below writes exactly the same text.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- if tools is defined and tools %}{%- set has_tools = true %}{%- else %}{%- set has_tools = false %}{%- endif %}"
    "{%- if system_message or has_tools %}"
    "{{- '<|im_start|>system\\n' + system_message }}"
    "{%- if has_tools %}"
    "{%- if system_message %}{{- '\\n\\n' }}{%- endif %}"
    "{{- '" + TOOLS_PREAMBLE.replace("\n", "\\n") + "' }}"
    "{%- for tool in tools %}"
    "{%- if tool['function'] is defined %}{%- set fn = tool['function'] %}{%- else %}{%- set fn = tool %}{%- endif %}"
    "{{- '\\n<function>\\n<name>' + fn['name'] + '</name>' }}"
    "{%- if fn['description'] is defined %}{{- '\\n<description>' + fn['description'] + '</description>' }}{%- endif %}"
    "{{- '\\n<parameters>' }}"
    "{%- if fn['parameters'] is defined and fn['parameters']['properties'] is defined %}"
    "{%- for pname, prop in fn['parameters']['properties'].items() %}"
    "{{- '\\n<parameter>\\n<name>' + pname + '</name>' }}"
    "{%- if prop['type'] is defined %}{{- '\\n<type>' + prop['type'] + '</type>' }}{%- endif %}"
    "{%- if prop['description'] is defined %}{{- '\\n<description>' + prop['description'] + '</description>' }}{%- endif %}"
    "{{- '\\n</parameter>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{%- if fn['parameters'] is defined and fn['parameters']['required'] is defined %}"
    "{{- '\\n<required>[' }}"
    "{%- for r in fn['parameters']['required'] %}{{- '\"' + r + '\"' }}{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}"
    "{{- ']</required>' }}"
    "{%- endif %}"
    "{{- '\\n</parameters>\\n</function>' }}"
    "{%- endfor %}"
    "{{- '" + TOOLS_FORMAT.replace("\n", "\\n") + "' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message['content'] %}{{- message['content'] }}{%- endif %}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- if message['content'] %}{{- '\\n' }}{%- endif %}"
    "{%- for tc in message['tool_calls'] %}"
    "{%- if tc['function'] is defined %}{%- set call = tc['function'] %}{%- else %}{%- set call = tc %}{%- endif %}"
    "{{- '<tool_call>\\n<function=' + call['name'] + '>\\n' }}"
    "{%- if call['arguments'] is defined and call['arguments'] is mapping %}"
    "{%- for aname, avalue in call['arguments'].items() %}"
    "{{- '<parameter=' + aname + '>\\n' + (avalue | string) + '\\n</parameter>\\n' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '</function>\\n</tool_call>\\n' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or loop_messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user\\n' }}{%- endif %}"
    "{{- '<tool_response>\\n' + message['content'] + '\\n</tool_response>\\n' }}"
    "{%- if loop.last or loop_messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render_tools(tools):
    s = TOOLS_PREAMBLE
    for tool in tools:
        fn = tool.get("function", tool)
        s += "\n<function>\n<name>" + fn["name"] + "</name>"
        if "description" in fn:
            s += "\n<description>" + fn["description"] + "</description>"
        s += "\n<parameters>"
        params = fn.get("parameters", {})
        for pname, prop in params.get("properties", {}).items():
            s += "\n<parameter>\n<name>" + pname + "</name>"
            if "type" in prop:
                s += "\n<type>" + prop["type"] + "</type>"
            if "description" in prop:
                s += "\n<description>" + prop["description"] + "</description>"
            s += "\n</parameter>"
        if "required" in params:
            s += "\n<required>[" + ", ".join('"' + r + '"' for r in params["required"]) + "]</required>"
        s += "\n</parameters>\n</function>"
    return s + TOOLS_FORMAT


def render_chat(messages, tools=None, add_generation_prompt=False):
    """The text CHAT_TEMPLATE makes of `messages` (checked against jinja on the GPU machine and against
    @huggingface/jinja here)."""
    if messages and messages[0]["role"] == "system":
        system, rest = messages[0]["content"], messages[1:]
    else:
        system, rest = "", messages
    s = ""
    if system or tools:
        s += "<|im_start|>system\n" + system
        if tools:
            if system:
                s += "\n\n"
            s += render_tools(tools)
        s += "<|im_end|>\n"
    for i, m in enumerate(rest):
        if m["role"] == "assistant":
            s += "<|im_start|>assistant\n"
            if m.get("content"):
                s += m["content"]
            if m.get("tool_calls"):
                if m.get("content"):
                    s += "\n"
                for tc in m["tool_calls"]:
                    call = tc.get("function", tc)
                    s += "<tool_call>\n<function=" + call["name"] + ">\n"
                    for k, v in call.get("arguments", {}).items():
                        s += "<parameter=" + k + ">\n" + str(v) + "\n</parameter>\n"
                    s += "</function>\n</tool_call>\n"
            s += "<|im_end|>\n"
        elif m["role"] == "tool":
            if i == 0 or rest[i - 1]["role"] != "tool":
                s += "<|im_start|>user\n"
            s += "<tool_response>\n" + m["content"] + "\n</tool_response>\n"
            if i == len(rest) - 1 or rest[i + 1]["role"] != "tool":
                s += "<|im_end|>\n"
        else:
            s += "<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>\n"
    if add_generation_prompt:
        s += "<|im_start|>assistant\n"
    return s


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------
# Step 1: collect the corpus (standard library only)
# ----------------------------------------------------------------------------------------------

MAN_SECTIONS = ["1", "2", "5", "7", "8"]          # English pages in /usr/share/man/man{N}
MAN_EXCLUDE = re.compile(r"^gcloud")              # 16k generated Google Cloud CLI pages: left out
README_MAX = 200_000
UNICODE_FIX = {"\u2010": "-", "\u2011": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
               "\u201d": '"', "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u00ad": ""}
UNICODE_RE = re.compile("|".join(map(re.escape, UNICODE_FIX)))


def fix_unicode(s):
    return UNICODE_RE.sub(lambda m: UNICODE_FIX[m.group(0)], s)


def dpkg_owners():
    """path -> package, from /var/lib/dpkg/info/*.list."""
    owner = {}
    d = "/var/lib/dpkg/info"
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".list"):
            continue
        pkg = fn[:-5].split(":")[0]
        with open(os.path.join(d, fn), encoding="utf-8", errors="replace") as f:
            for line in f:
                owner.setdefault(line.rstrip("\n"), pkg)
    return owner


def dpkg_status():
    """[{package, version, summary, description}] from /var/lib/dpkg/status (installed packages)."""
    out = []
    with open("/var/lib/dpkg/status", encoding="utf-8", errors="replace") as f:
        text = f.read()
    for para in text.split("\n\n"):
        fields, cur = {}, None
        for line in para.split("\n"):
            if line.startswith((" ", "\t")) and cur:
                fields[cur] += "\n" + line
            elif ":" in line:
                cur, _, v = line.partition(":")
                fields[cur] = v.strip()
        if "Package" not in fields or "install ok installed" not in fields.get("Status", ""):
            continue
        desc = fields.get("Description", "")
        summary, _, long = desc.partition("\n")
        long = "\n".join(l[1:] if l.startswith(" ") else l for l in long.split("\n"))
        long = "\n".join("" if l.strip() == "." else l for l in long.split("\n")).strip()
        out.append({"package": fields["Package"], "version": fields.get("Version", ""),
                    "section": fields.get("Section", ""), "summary": summary.strip(), "description": long,
                    "homepage": fields.get("Homepage", "")})
    return sorted(out, key=lambda r: r["package"])


def is_prose_line(s):
    return len(s) >= 48


def reflow(text, dedent_man=False):
    """Join the lines of filled paragraphs into one line each (man pages and info manuals are filled
    at 72-80 columns), keep everything else (lists, code, tables) as it is."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [l.rstrip() for l in block.split("\n") if l.strip()]
        if not lines:
            continue
        runs = []
        for l in lines:
            ind = len(l) - len(l.lstrip(" "))
            body = l.strip()
            if runs:
                r = runs[-1]
                same = ind == (r["cont"] if r["cont"] is not None else ind if ind <= r["ind"] else -1)
                bullet = re.match(r"^([-*\u2022+]\s|\d+[.)]\s|-{1,2}\w)", body)
                if same and is_prose_line(r["last"]) and not bullet and not re.search(r"\s{3,}", body):
                    r["parts"].append(body)
                    r["last"] = l
                    if r["cont"] is None:
                        r["cont"] = ind
                    continue
            runs.append({"ind": ind, "cont": None, "parts": [body], "last": l})
        outl = []
        for r in runs:
            ind = r["ind"]
            if dedent_man:
                ind = 0 if ind < 7 else 4 * int(round((ind - 7) / 7.0))
            body = " ".join(r["parts"])
            if not re.search(r"\S\s{3,}\S", body):
                body = re.sub(r"(?<=[.!?:;)\"'])  +(?=\S)", " ", body)  # groff's two spaces after a sentence
            outl.append(" " * ind + body)
        out.append("\n".join(outl))
    return "\n\n".join(out)


def render_man(path):
    env = dict(os.environ, MANWIDTH="80", GROFF_NO_SGR="1", MAN_KEEP_FORMATTING="", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    try:
        p = subprocess.run(f"man --nh --nj -E UTF-8 -P cat -l {shlex_quote(path)} 2>/dev/null | col -bx",
                           shell=True, capture_output=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return ""
    text = p.stdout.decode("utf-8", errors="replace")
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 6:
        return ""
    lines = lines[1:-1]  # the page header (NAME(1) ... NAME(1)) and footer (version, date)
    return fix_unicode(reflow("\n".join(lines), dedent_man=True))


def shlex_quote(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


def man_facts(name, section, text):
    """NAME line and the first sentences of DESCRIPTION, for the synthetic questions."""
    m = re.search(r"^NAME\n(.+?)(?:\n\n|\n[A-Z])", text, re.M | re.S)
    if not m:
        return None
    line = " ".join(m.group(1).split())
    parts = re.split(r"\s+[-\u2013\u2014]\s+", line, maxsplit=1)
    if len(parts) != 2:
        return None
    names = [n.strip() for n in parts[0].split(",") if n.strip()]
    desc = parts[1].strip().rstrip(".")
    if not names or not desc or len(desc) > 160 or len(names[0]) > 40:
        return None
    detail = ""
    d = re.search(r"^DESCRIPTION\n(.+?)(?:\n\n|$)", text, re.M | re.S)
    if d:
        para = " ".join(d.group(1).split())
        sents = re.split(r"(?<=[.!?])\s+(?=[A-Z])", para)
        detail = ""
        for s in sents[:2]:
            if len(detail) + len(s) > 320:
                break
            detail = (detail + " " + s).strip()
    return {"name": names[0], "names": names, "section": section, "summary": desc, "detail": detail}


def info_text(path):
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.endswith(".gz") else open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    nodes = raw.split("\x1f")
    out = []
    for node in nodes:
        node = node.lstrip("\n")
        if node.startswith("Tag Table:") or node.startswith("End Tag Table") or node.startswith("Local Variables"):
            continue
        lines = node.split("\n")
        if lines and lines[0].startswith("File: "):
            lines = lines[1:]
        text = "\n".join(l for l in lines if not l.startswith("* Menu:"))
        text = re.sub(r"\n\*[^\n]*::[^\n]*", "", text)  # menu entries
        text = text.strip()
        if len(text) > 200:
            out.append(reflow(text))
    return fix_unicode("\n\n".join(out))


def read_text(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(README_MAX + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(README_MAX + 1)
    except OSError:
        return ""
    if len(data) > README_MAX or b"\x00" in data[:4096]:
        return ""
    try:
        return fix_unicode(data.decode("utf-8"))
    except UnicodeDecodeError:
        return ""


def copyright_license(text):
    """The licence of a package's main files (DEP-5 `Files: *` stanza), else the first License: line."""
    for para in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", para, re.M):
            m = re.search(r"^License:\s*(\S.*)$", para, re.M)
            if m:
                return m.group(1).strip()
    m = re.search(r"^License:\s*(\S.*)$", text, re.M)
    return m.group(1).strip() if m else None


def collect(out_dir):
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    owner = dpkg_owners()
    seen_paths, seen_docs = set(), set()
    docs, stats = [], {}

    def add(kind, path, text):
        text = text.strip()
        if len(text) < 200:
            return False
        real = os.path.realpath(path)
        h = hashlib.sha1(text.encode()).hexdigest()
        if real in seen_paths or h in seen_docs:
            return False
        seen_paths.add(real)
        seen_docs.add(h)
        pkg = owner.get(path) or owner.get(real) or "?"
        docs.append({"kind": kind, "path": path, "package": pkg, "text": text})
        st = stats.setdefault(kind, {"files": 0, "chars": 0})
        st["files"] += 1
        st["chars"] += len(text)
        return True

    # 1. licences
    for fn in sorted(os.listdir("/usr/share/common-licenses")):
        p = os.path.join("/usr/share/common-licenses", fn)
        if os.path.isfile(p):
            add("common-licenses", p, read_text(p))
    log(f"collect: common-licenses {stats.get('common-licenses')}")

    # 2. copyright files, and the licence of each package for the synthetic questions
    licenses = {}
    for pkg in sorted(os.listdir("/usr/share/doc")):
        p = os.path.join("/usr/share/doc", pkg, "copyright")
        if os.path.isfile(p):
            t = read_text(p)
            lic = copyright_license(t)
            if lic and len(lic) < 60:
                licenses[pkg] = lic
            add("copyright", p, t)
    log(f"collect: copyright {stats.get('copyright')}")

    # 3. README files of /usr/share/doc (plain text and markdown; no HTML)
    readmes = []
    for root, dirs, files in os.walk("/usr/share/doc"):
        dirs.sort()
        for fn in sorted(files):
            if re.match(r"^README([._-].*)?$", fn, re.I) and not re.search(r"\.(html?|pdf|png|svg)(\.gz)?$", fn, re.I):
                readmes.append(os.path.join(root, fn))
    for p in readmes:
        add("readme", p, read_text(p))
    log(f"collect: readme {stats.get('readme')}")

    # 4. GNU info manuals
    for fn in sorted(os.listdir("/usr/share/info")):
        if ".info" in fn:
            add("info", os.path.join("/usr/share/info", fn), info_text(os.path.join("/usr/share/info", fn)))
    log(f"collect: info {stats.get('info')}")

    # 5. man pages, rendered by man-db + groff (no hyphenation, no justification), paragraphs joined
    pages = []
    for sec in MAN_SECTIONS:
        d = f"/usr/share/man/man{sec}"
        for fn in sorted(os.listdir(d)):
            if MAN_EXCLUDE.match(fn):
                continue
            pages.append((sec, os.path.join(d, fn)))
    # symlinks to a page already listed render the same text: keep one
    uniq, real_seen = [], set()
    for sec, p in pages:
        r = os.path.realpath(p)
        if r not in real_seen and r.startswith("/usr/share/man/man"):
            real_seen.add(r)
            uniq.append((sec, r))
    log(f"collect: rendering {len(uniq)} man pages ...")
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as ex:
        rendered = list(ex.map(lambda sp: render_man(sp[1]), uniq))
    facts = []
    for (sec, p), text in zip(uniq, rendered):
        if add("man", p, text):
            name = re.sub(r"\.\w+(\.gz)?$", "", os.path.basename(p))
            f = man_facts(name, sec, text)
            if f:
                f["package"] = docs[-1]["package"]
                facts.append(f)
    log(f"collect: man {stats.get('man')}, {len(facts)} NAME lines")

    # 6. package descriptions (control data of the installed packages)
    status = dpkg_status()
    for r in status:
        if r["description"]:
            text = f"Package: {r['package']}\nVersion: {r['version']}\nSection: {r['section']}\n\n{r['summary']}\n\n{r['description']}"
            docs.append({"kind": "dpkg-status", "path": "/var/lib/dpkg/status", "package": r["package"], "text": text})
            st = stats.setdefault("dpkg-status", {"files": 0, "chars": 0})
            st["files"] += 1
            st["chars"] += len(text)

    # paragraph-level de-duplication (licence texts repeat in hundreds of copyright files)
    seen_par, removed = set(), 0
    for d in docs:
        keep = []
        for par in d["text"].split("\n\n"):
            key = " ".join(par.split())
            if len(key) >= 80:
                h = hashlib.sha1(key.encode()).digest()
                if h in seen_par:
                    removed += len(par)
                    continue
                seen_par.add(h)
            keep.append(par)
        d["text"] = "\n\n".join(keep).strip()
    docs = [d for d in docs if len(d["text"]) >= 200]
    total = sum(len(d["text"]) for d in docs)
    log(f"collect: {len(docs)} documents, {total / 1e6:.1f} M characters after removing {removed / 1e6:.1f} M of repeated paragraphs")

    with gzip.open(os.path.join(out_dir, "corpus.jsonl.gz"), "wt", encoding="utf-8", compresslevel=9) as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    pkgs = sorted({d["package"] for d in docs})
    facts_out = {"man": facts, "licenses": licenses,
                 "packages": [{k: r[k] for k in ("package", "version", "section", "summary", "homepage")} for r in status]}
    with gzip.open(os.path.join(out_dir, "facts.json.gz"), "wt", encoding="utf-8") as f:
        json.dump(facts_out, f, ensure_ascii=False)
    by_kind = {}
    for d in docs:
        k = by_kind.setdefault(d["kind"], {"documents": 0, "chars": 0})
        k["documents"] += 1
        k["chars"] += len(d["text"])
    manifest = {
        "made_by": "scripts/train-demo.py collect",
        "machine": {"os_release": read_text("/etc/os-release").split("\n")[:4], "man_db": tool_version(["man", "--version"]),
                    "groff": tool_version(["groff", "--version"])},
        "sources": {
            "man": f"/usr/share/man/man{{{','.join(MAN_SECTIONS)}}}/* (English), except gcloud*; rendered with "
                   "`MANWIDTH=80 man --nh --nj -E UTF-8 -P cat -l FILE | col -bx`, header/footer dropped, paragraphs joined",
            "info": "/usr/share/info/*.info*.gz (GNU manuals), node headers and menus dropped, paragraphs joined",
            "common-licenses": "/usr/share/common-licenses/*",
            "copyright": "/usr/share/doc/*/copyright",
            "readme": "/usr/share/doc/**/README* (text and markdown, <= 200 kB)",
            "dpkg-status": "package descriptions of the installed packages, from /var/lib/dpkg/status",
        },
        "documents_by_kind": by_kind,
        "total_chars": total,
        "repeated_paragraph_chars_removed": removed,
        "packages": len(pkgs),
        "package_list": pkgs,
        "man_facts": len(facts),
        "licenses": len(licenses),
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    log(f"collect: wrote {out_dir} in {time.time() - t0:.0f} s: {json.dumps(by_kind)}")


def tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    except Exception:  # noqa: BLE001
        return "?"


# ----------------------------------------------------------------------------------------------
# Step 2a: synthetic agent-style conversations (standard library only; seeded)
# ----------------------------------------------------------------------------------------------

NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena", "Maya",
         "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Yuki", "Zoe", "Amir",
         "Bea", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ivan", "Jana", "Kofi", "Luis", "Mei", "Nils"]
CITIES = [("Paris", "Europe/Paris"), ("Berlin", "Europe/Berlin"), ("Madrid", "Europe/Madrid"), ("Rome", "Europe/Rome"),
          ("Lisbon", "Europe/Lisbon"), ("Vienna", "Europe/Vienna"), ("Oslo", "Europe/Oslo"), ("Tokyo", "Asia/Tokyo"),
          ("Seoul", "Asia/Seoul"), ("Cairo", "Africa/Cairo"), ("Nairobi", "Africa/Nairobi"), ("Lima", "America/Lima"),
          ("Toronto", "America/Toronto"), ("Sydney", "Australia/Sydney"), ("Mumbai", "Asia/Kolkata"),
          ("Mexico City", "America/Mexico_City"), ("Stockholm", "Europe/Stockholm"), ("Dublin", "Europe/Dublin"),
          ("Prague", "Europe/Prague"), ("Warsaw", "Europe/Warsaw"), ("Athens", "Europe/Athens"),
          ("Helsinki", "Europe/Helsinki"), ("Buenos Aires", "America/Argentina/Buenos_Aires"),
          ("Cape Town", "Africa/Johannesburg"), ("Bangkok", "Asia/Bangkok"), ("Hanoi", "Asia/Ho_Chi_Minh"),
          ("Santiago", "America/Santiago"), ("Zurich", "Europe/Zurich"), ("Amsterdam", "Europe/Amsterdam"),
          ("Brussels", "Europe/Brussels"), ("New York", "America/New_York"), ("Chicago", "America/Chicago"),
          ("Denver", "America/Denver"), ("Los Angeles", "America/Los_Angeles"), ("Singapore", "Asia/Singapore"),
          ("Jakarta", "Asia/Jakarta"), ("Istanbul", "Europe/Istanbul"), ("Lagos", "Africa/Lagos")]
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy", "partly cloudy", "stormy", "clear"]
CURRENCIES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "SEK": 10.4, "INR": 83.0,
              "AUD": 1.52, "NOK": 10.6}
THINGS = ["apples", "books", "chairs", "lamps", "pencils", "cables", "tickets", "boxes", "cups", "plates", "shirts",
          "bottles", "keys", "maps", "tables", "notebooks"]
JOBS = ["engineer", "teacher", "designer", "nurse", "pilot", "chef", "writer", "doctor", "farmer", "artist", "student",
        "librarian", "musician", "architect"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "grey", "brown"]
FILES = ["notes.txt", "todo.md", "README.md", "config.json", "report.csv", "hello.py", "app.log", "data.txt"]
DIRS = ["/tmp", "/home/user", "/var/log", "/etc", "~/projects", "/srv/data", "."]
SYSTEMS = ["", "", "You are a helpful assistant.", "You are a helpful assistant.", "You are a concise assistant.",
           "You are the LatentMesh demo assistant. Answer briefly and correctly.",
           "You are a helpful assistant. Answer in one or two sentences."]
TOOL_SYSTEMS = ["", "You are a helpful assistant.", "You are a helpful assistant with access to tools.",
                "You are an agent. Call a tool when it helps; otherwise answer directly.",
                "You are the LatentMesh demo assistant. Use the tools when they help."]


def _tool(name, description, params, required):
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {k: {"type": t, "description": d} for k, t, d in params}, "required": required}}}


TOOLS = {
    "get_weather": _tool("get_weather", "Get the current weather in a city.",
                         [("city", "string", "Name of the city"), ("unit", "string", "celsius or fahrenheit")], ["city"]),
    "calculator": _tool("calculator", "Evaluate an arithmetic expression.",
                        [("expression", "string", "The expression, for example 12 * (3 + 4)")], ["expression"]),
    "get_time": _tool("get_time", "Get the current local time in a time zone.",
                      [("timezone", "string", "IANA time zone name, for example Europe/Paris")], ["timezone"]),
    "man_page": _tool("man_page", "Look up the manual page of a command.",
                      [("command", "string", "Name of the command"), ("section", "integer", "Manual section")], ["command"]),
    "package_info": _tool("package_info", "Get the version, summary and licence of an installed Debian package.",
                          [("package", "string", "Package name")], ["package"]),
    "search_docs": _tool("search_docs", "Search the installed manual pages by keywords.",
                         [("query", "string", "What to look for")], ["query"]),
    "run_command": _tool("run_command", "Run a shell command and return its output.",
                         [("command", "string", "The command line to run")], ["command"]),
    "read_file": _tool("read_file", "Read a text file.", [("path", "string", "Path of the file")], ["path"]),
    "convert_currency": _tool("convert_currency", "Convert an amount of money between currencies.",
                              [("amount", "number", "Amount to convert"), ("from_currency", "string", "ISO code, e.g. USD"),
                               ("to_currency", "string", "ISO code, e.g. EUR")], ["amount", "from_currency", "to_currency"]),
    "send_email": _tool("send_email", "Send an email.",
                        [("to", "string", "Recipient address"), ("subject", "string", "Subject line"),
                         ("body", "string", "Message text")], ["to", "subject", "body"]),
    "create_event": _tool("create_event", "Create a calendar event.",
                          [("title", "string", "Title of the event"), ("date", "string", "Date, YYYY-MM-DD"),
                           ("time", "string", "Start time, HH:MM")], ["title", "date", "time"]),
}


def _call(name, **args):
    return {"type": "function", "function": {"name": name, "arguments": args}}


def _j(x):
    return json.dumps(x, ensure_ascii=False)


class Synth:
    """Seeded generators of (messages, tools) conversations. `facts` comes from the collect step."""

    def __init__(self, facts, seed):
        self.r = random.Random(seed)
        self.man = [f for f in facts["man"] if re.match(r"^[a-z][\w.+-]*$", f["name"]) and len(f["summary"]) >= 8]
        self.man_cmds = [f for f in self.man if f["section"] in ("1", "8")]
        self.lic = facts["licenses"]
        self.pkgs = [p for p in facts["packages"] if p["summary"]]
        self.pkg_by_name = {p["package"]: p for p in self.pkgs}

    # -- small helpers --
    def pick(self, xs):
        return self.r.choice(xs)

    def cap(self, s):
        return s[:1].upper() + s[1:]

    def date(self):
        return f"2026-{self.r.randint(1, 12):02d}-{self.r.randint(1, 28):02d}"

    def clock(self):
        return f"{self.r.randint(0, 23):02d}:{self.pick(['00', '15', '30', '45', str(self.r.randint(10, 59))])}"

    # -- plain question/answer pairs (user, assistant) --
    def greet(self):
        u = self.pick(["hello", "Hello", "hi", "Hi!", "Hello!", "hey", "Hey there", "Good morning", "Good evening", "hi there",
                       "Hello, how are you?", "Who are you?", "What can you do?", "What are you?", "Thanks!", "Thank you",
                       "thanks, bye", "Can you help me?", "Are you there?", "Tell me about yourself."])
        intro = self.pick(["I am a small demo model served by LatentMesh.", "I am LatentMesh's demo assistant, a small hybrid Mamba and attention model."])
        skills = self.pick(["I can answer questions about Linux commands and Debian packages, do arithmetic, write JSON and call tools.",
                            "I know the manual pages of this system, I can do simple arithmetic, write JSON and call tools."])
        lu = u.lower()
        if lu.startswith("thank"):
            a = self.pick(["You're welcome!", "You're welcome. Happy to help.", "Glad I could help!", "Any time!"])
        elif "who" in lu or "what are" in lu or "yourself" in lu:
            a = intro + " " + skills
        elif "what can" in lu or "help" in lu:
            a = self.pick(["Yes, of course. ", "Sure. ", ""]) + skills + " " + self.pick(["What would you like to do?", "How can I help?"])
        elif "how are" in lu:
            a = "I'm doing well, thank you! How can I help you today?"
        elif "there" in lu and "are" in lu:
            a = "Yes, I'm here. How can I help?"
        else:
            a = self.pick(["Hello! How can I help you today?", "Hi! How can I help?", "Hello! What can I do for you?",
                           "Hi there! What would you like to know?"])
        return u, a

    def arith(self):
        r = self.r
        k = r.random()
        if k < 0.3:
            a, b = r.randint(0, 999), r.randint(0, 999)
            q = self.pick(["What is {a} + {b}?", "{a} + {b} = ?", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
                           "Compute {a} + {b}.", "{a}+{b}"]).format(a=a, b=b)
            return q, f"{a} + {b} = {a + b}."
        if k < 0.5:
            a, b = r.randint(0, 999), r.randint(0, 999)
            q = self.pick(["What is {a} - {b}?", "Subtract {b} from {a}.", "{a} - {b} = ?", "Compute {a} - {b}."]).format(a=a, b=b)
            return q, f"{a} - {b} = {a - b}."
        if k < 0.7:
            a, b = r.randint(2, 99), r.randint(2, 12 if r.random() < 0.5 else 99)
            q = self.pick(["What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}.", "{a} x {b} = ?",
                           "Compute {a} * {b}."]).format(a=a, b=b)
            return q, f"{a} * {b} = {a * b}."
        if k < 0.8:
            b, c = r.randint(2, 12), r.randint(2, 99)
            a = b * c
            q = self.pick(["What is {a} / {b}?", "Divide {a} by {b}.", "How much is {a} divided by {b}?"]).format(a=a, b=b)
            return q, f"{a} / {b} = {c}."
        if k < 0.9:
            a, b, c = r.randint(1, 50), r.randint(1, 50), r.randint(2, 9)
            q = self.pick(["What is ({a} + {b}) * {c}?", "Compute ({a} + {b}) * {c}, step by step."]).format(a=a, b=b, c=c)
            return q, f"First, {a} + {b} = {a + b}. Then {a + b} * {c} = {(a + b) * c}. The answer is {(a + b) * c}."
        n, item, price = r.randint(2, 12), self.pick(THINGS), r.randint(2, 30)
        name = self.pick(NAMES)
        q = f"{name} buys {n} {item} at {price} dollars each. How much does {name} pay?"
        return q, f"{n} * {price} = {n * price}, so {name} pays {n * price} dollars."

    def person(self):
        return {"name": self.pick(NAMES), "age": self.r.randint(18, 80), "city": self.pick(CITIES)[0]}

    def json_task(self):
        r = self.r
        k = r.random()
        if k < 0.25:
            p = self.person()
            q = self.pick(["Create a JSON object for a person named {name}, aged {age}, who lives in {city}.",
                           "Write JSON with name {name}, age {age} and city {city}.",
                           "Give me a JSON object: name = {name}, age = {age}, city = {city}."]).format(**p)
            return q, _j(p)
        if k < 0.45 and self.pkgs:
            p = self.pick(self.pkgs)
            lic = self.lic.get(p["package"])
            obj = {"package": p["package"], "version": p["version"]}
            q = f"Convert to JSON: package {p['package']}, version {p['version']}"
            if lic:
                obj["license"] = lic
                q += f", license {lic}"
            return q + ".", _j(obj)
        if k < 0.6:
            n, item, city, oid = r.randint(1, 20), self.pick(THINGS), self.pick(CITIES)[0], r.randint(1000, 9999)
            q = f"Extract order_id, quantity, item and city as JSON from: \"Order {oid}: {n} {item} shipped to {city}.\""
            return q, _j({"order_id": oid, "quantity": n, "item": item, "city": city})
        if k < 0.75:
            items = r.sample(COLORS + THINGS, r.randint(2, 5))
            q = self.pick(["Write these as a JSON array: {x}.", "Make a JSON list of: {x}."]).format(x=", ".join(items))
            return q, _j(items)
        if k < 0.9:
            p = self.person()
            p["job"] = self.pick(JOBS)
            key = self.pick(list(p))
            q = f"Here is a JSON object: {_j(p)}. What is the value of \"{key}\"?"
            v = p[key]
            return q, f"The value of \"{key}\" is {_j(v) if isinstance(v, str) else v}."
        p = self.person()
        bad = _j(p).replace('"', "'")
        q = f"Fix this JSON: {bad}"
        return q, f"JSON needs double quotes: {_j(p)}"

    def man_qa(self):
        if not self.man:
            return self.greet()
        f = self.pick(self.man_cmds if self.r.random() < 0.8 and self.man_cmds else self.man)
        name, summ, sec = f["name"], f["summary"], f["section"]
        k = self.r.random()
        if k < 0.45:
            q = self.pick(["What does the {c} command do?", "What is {c}?", "What does {c} do?", "Explain {c} in one sentence.",
                           "What is the {c} command for?", "Tell me about {c}."]).format(c=name)
            a = f"{name}: {summ}."
            if f["detail"] and self.r.random() < 0.7:
                a += " " + f["detail"]
            a += self.pick(["", "", f" See `man {sec} {name}` for details.", f" Run `man {name}` for more."])
            return q, a
        if k < 0.7:
            q = self.pick(["Which command can I use to {s}?", "How do I {s}?", "Is there a command to {s}?",
                           "What command should I use to {s}?"]).format(s=summ[:1].lower() + summ[1:])
            return q, self.pick([f"You can use {name}: {summ}.", f"Use `{name}` ({summ}).", f"Try {name}. Its manual says: {summ}."])
        if k < 0.85:
            q = self.pick(["Which package provides {c}?", "In which Debian package is {c}?", "What package is {c} in?"]).format(c=name)
            return q, f"{name} is in the {f['package']} package."
        q = self.pick(["Which manual section documents {c}?", "Where is the manual of {c}?"]).format(c=name)
        return q, f"{name} is documented in section {sec} of the manual: run `man {sec} {name}`."

    def pkg_qa(self):
        if not self.pkgs:
            return self.greet()
        p = self.pick(self.pkgs)
        name = p["package"]
        lic = self.lic.get(name)
        k = self.r.random()
        if k < 0.45 or not lic:
            q = self.pick(["What is the {p} package?", "What is {p}?", "Describe the Debian package {p}.", "What does the package {p} contain?"]).format(p=name)
            return q, f"{name} ({p['version']}): {p['summary']}."
        if k < 0.8:
            q = self.pick(["What license does {p} use?", "Under which licence is {p} distributed?", "What is the license of {p}?"]).format(p=name)
            return q, f"{name} is distributed under {lic}."
        q = f"Which version of {name} is installed?"
        return q, f"Version {p['version']} of {name} is installed."

    def qa(self):
        k = self.r.random()
        if k < 0.12:
            return self.greet()
        if k < 0.40:
            return self.arith()
        if k < 0.60:
            return self.json_task()
        if k < 0.88:
            return self.man_qa()
        return self.pkg_qa()

    def plain(self):
        turns = 1 if self.r.random() < 0.7 else self.r.randint(2, 3)
        msgs = []
        sys_ = self.pick(SYSTEMS)
        if sys_:
            msgs.append({"role": "system", "content": sys_})
        for _ in range(turns):
            u, a = self.qa()
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        return msgs, None

    # -- tool use --
    def tool_case(self):
        """(needed tool names, user text, [calls], [results], final answer)"""
        r = self.r
        k = r.random()
        if k < 0.17:
            cities = r.sample(CITIES, 2 if r.random() < 0.2 else 1)
            fahr = r.random() < 0.15
            unit = "fahrenheit" if fahr else "celsius"
            if len(cities) == 1:
                c = cities[0][0]
                u = self.pick(["What's the weather in {c}?", "What is the weather like in {c} today?", "Is it raining in {c}?",
                               "How warm is it in {c} right now?", "weather in {c}", "Do I need an umbrella in {c}?"]).format(c=c)
            else:
                u = f"Compare the weather in {cities[0][0]} and {cities[1][0]}."
            if fahr:
                u += " In Fahrenheit, please."
            calls, results, parts = [], [], []
            for c, _ in cities:
                t = r.randint(-5, 35) if not fahr else r.randint(25, 95)
                cond = self.pick(CONDITIONS)
                args = {"city": c}
                if fahr:
                    args["unit"] = unit
                calls.append(_call("get_weather", **args))
                results.append({"city": c, "temperature": t, "unit": unit, "condition": cond, "humidity": r.randint(20, 95)})
                parts.append(f"{c}: {t} °{'F' if fahr else 'C'} and {cond}")
            if len(cities) == 1:
                res = results[0]
                ans = f"It is {res['temperature']} °{'F' if fahr else 'C'} and {res['condition']} in {res['city']}, with {res['humidity']}% humidity."
                if "umbrella" in u:
                    ans += " Take an umbrella." if res["condition"] in ("rainy", "stormy") else " You should not need an umbrella."
            else:
                ans = "Right now: " + "; ".join(parts) + "."
            return ["get_weather"], u, calls, results, ans
        if k < 0.30:
            a, b = r.randint(10, 9999), r.randint(2, 999)
            op = self.pick(["+", "-", "*"])
            expr = f"{a} {op} {b}"
            val = eval(expr)  # noqa: S307 (our own integers)
            u = self.pick(["Use the calculator to compute {e}.", "What is {e}?", "Calculate {e}.", "How much is {e}?"]).format(e=expr)
            return ["calculator"], u, [_call("calculator", expression=expr)], [{"result": val}], f"{expr} = {val}."
        if k < 0.40:
            c, tz = self.pick(CITIES)
            tm, d = self.clock(), self.date()
            u = self.pick(["What time is it in {c}?", "What's the local time in {c}?", "Tell me the time in {c}."]).format(c=c)
            return ["get_time"], u, [_call("get_time", timezone=tz)], [{"timezone": tz, "time": tm, "date": d}], f"It is {tm} in {c} ({tz}), on {d}."
        if k < 0.53 and self.man_cmds:
            f = self.pick(self.man_cmds)
            c = f["name"]
            u = self.pick(["What does the {c} command do?", "Look up the manual of {c}.", "What is {c} used for?",
                           "Check the man page of {c} and tell me what it does."]).format(c=c)
            res = {"command": c, "section": int(f["section"]), "summary": f["summary"]}
            if f["detail"]:
                res["description"] = f["detail"]
            ans = f"{c}: {f['summary']}." + (" " + f["detail"] if f["detail"] and r.random() < 0.5 else "")
            return ["man_page"], u, [_call("man_page", command=c)], [res], ans
        if k < 0.61 and self.man_cmds:
            f = self.pick(self.man_cmds)
            others = r.sample(self.man_cmds, 2)
            q = f["summary"][:1].lower() + f["summary"][1:]
            u = self.pick(["Which command can I use to {q}?", "Find me a command to {q}.", "How can I {q}?"]).format(q=q)
            hits = [{"name": x["name"], "section": int(x["section"]), "summary": x["summary"]} for x in [f] + [o for o in others if o is not f]]
            return ["search_docs"], u, [_call("search_docs", query=q)], [{"results": hits}], f"You can use {f['name']}: {f['summary']}."
        if k < 0.69 and self.pkgs:
            p = self.pick(self.pkgs)
            n = p["package"]
            lic = self.lic.get(n, "unknown")
            res = {"package": n, "version": p["version"], "summary": p["summary"], "license": lic}
            if r.random() < 0.5:
                u = self.pick(["Which version of {p} is installed?", "Is {p} installed? Which version?"]).format(p=n)
                ans = f"Yes: {n} {p['version']} is installed ({p['summary']})."
            else:
                u = self.pick(["What license does the package {p} have?", "Check the licence of {p}."]).format(p=n)
                ans = f"{n} is distributed under {lic}." if lic != "unknown" else f"The licence of {n} is not recorded."
            return ["package_info"], u, [_call("package_info", package=n)], [res], ans
        if k < 0.78:
            kind = r.random()
            if kind < 0.4:
                d = self.pick(DIRS)
                files = r.sample(FILES, r.randint(1, 4))
                u = self.pick(["List the files in {d}.", "What files are in {d}?", "Show me the contents of {d}."]).format(d=d)
                res = {"exit_code": 0, "stdout": "\n".join(sorted(files)) + "\n"}
                return ["run_command"], u, [_call("run_command", command=f"ls {d}")], [res], f"{d} contains: {', '.join(sorted(files))}."
            if kind < 0.7:
                f = self.pick(FILES)
                n = r.randint(1, 500)
                u = f"How many lines does {f} have?"
                return ["run_command"], u, [_call("run_command", command=f"wc -l {f}")], [{"exit_code": 0, "stdout": f"{n} {f}\n"}], f"{f} has {n} lines."
            cmd, out, ans = self.pick([("uname -r", "6.1.0-18-amd64", "The kernel version is {o}."),
                                       ("whoami", self.pick(NAMES).lower(), "You are logged in as {o}."),
                                       ("pwd", self.pick(["/home/user", "/srv/data", "/tmp"]), "The current directory is {o}."),
                                       ("date +%F", self.date(), "Today is {o}.")])
            u = {"uname -r": "Which kernel version is running?", "whoami": "Which user am I logged in as?",
                 "pwd": "What is the current directory?", "date +%F": "What is today's date?"}[cmd]
            return ["run_command"], u, [_call("run_command", command=cmd)], [{"exit_code": 0, "stdout": out + "\n"}], ans.format(o=out)
        if k < 0.84:
            f = self.pick(FILES)
            name, tm = self.pick(NAMES), self.clock()
            content = self.pick([f"Meeting with {name} at {tm}.", f"Buy {r.randint(2, 9)} {self.pick(THINGS)}.",
                                 f"Call {name} about the report.", f"The server restarts at {tm}."])
            u = self.pick(["What's in {f}?", "Read {f} for me.", "Show me {f}."]).format(f=f)
            return ["read_file"], u, [_call("read_file", path=f)], [{"path": f, "content": content}], f"{f} says: {content}"
        if k < 0.91:
            amt = r.randint(1, 2000)
            a, b = r.sample(list(CURRENCIES), 2)
            val = round(amt / CURRENCIES[a] * CURRENCIES[b], 2)
            u = self.pick(["Convert {n} {a} to {b}.", "How much is {n} {a} in {b}?", "{n} {a} in {b}?"]).format(n=amt, a=a, b=b)
            return (["convert_currency"], u, [_call("convert_currency", amount=amt, from_currency=a, to_currency=b)],
                    [{"amount": amt, "from": a, "to": b, "result": val}], f"{amt} {a} is {val:.2f} {b}.")
        if k < 0.96:
            name, tm = self.pick(NAMES), self.clock()
            addr = name.lower() + "@example.com"
            subj, body = self.pick([("Meeting moved", f"The meeting moved to {tm}."), ("Lunch", "Lunch tomorrow at noon?"),
                                    ("Report", "The report is ready."), ("Hello", "Hi, how are you?")])
            u = f"Send an email to {addr} with the subject \"{subj}\" saying: {body}"
            return (["send_email"], u, [_call("send_email", to=addr, subject=subj, body=body)], [{"status": "sent"}],
                    f"Done: I sent the email \"{subj}\" to {addr}.")
        title = self.pick(["Team meeting", "Dentist", "Project review", "Lunch with " + self.pick(NAMES), "Release planning"])
        d, tm = self.date(), self.clock()
        u = f"Add \"{title}\" to my calendar on {d} at {tm}."
        return (["create_event"], u, [_call("create_event", title=title, date=d, time=tm)],
                [{"status": "created", "id": r.randint(100, 9999)}], f"I created the event \"{title}\" on {d} at {tm}.")

    def tool_conv(self):
        r = self.r
        msgs = []
        sys_ = self.pick(TOOL_SYSTEMS)
        if sys_:
            msgs.append({"role": "system", "content": sys_})
        if r.random() < 0.12:  # tools offered, but none needed
            tools = [TOOLS[n] for n in r.sample(list(TOOLS), r.randint(1, 3))]
            u, a = self.pick([self.greet, self.arith, self.json_task])()
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
            return msgs, tools
        need, u, calls, results, ans = self.tool_case()
        others = [n for n in TOOLS if n not in need]
        names = need + r.sample(others, r.randint(0, 2))
        r.shuffle(names)
        tools = [TOOLS[n] for n in names]
        msgs.append({"role": "user", "content": u})
        pre = ""
        if r.random() < 0.25:
            pre = self.pick(["Let me check.", "I'll look that up.", "Let me use a tool for this.", "One moment."])
        msgs.append({"role": "assistant", "content": pre, "tool_calls": calls})
        for res in results:
            msgs.append({"role": "tool", "content": _j(res)})
        msgs.append({"role": "assistant", "content": ans})
        if r.random() < 0.15:
            u2, a2 = self.qa()
            msgs += [{"role": "user", "content": u2}, {"role": "assistant", "content": a2}]
        return msgs, tools

    def conversation(self):
        return self.tool_conv() if self.r.random() < 0.4 else self.plain()


def synth_texts(facts, seed, n):
    s = Synth(facts, seed)
    out = []
    for _ in range(n):
        m, t = s.conversation()
        out.append(render_chat(m, t))
    return out


def load_data(data_dir, dry_run):
    with gzip.open(os.path.join(data_dir, "facts.json.gz"), "rt", encoding="utf-8") as f:
        facts = json.load(f)
    docs = []
    with gzip.open(os.path.join(data_dir, "corpus.jsonl.gz"), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            docs.append(json.loads(line))
            if dry_run and i >= 400:
                break
    return facts, docs


def heldout(path):
    return int(hashlib.sha1(path.encode()).hexdigest(), 16) % 100 == 0


# ----------------------------------------------------------------------------------------------
# Step 2b: tokenizer (tokenizers' byte-level BPE trainer)
# ----------------------------------------------------------------------------------------------

def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=ALL_ADDED,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # the tool markers stay single tokens but are not "special": decoding with skip_special_tokens keeps them
    j = json.loads(tok.to_str())
    for t in j["added_tokens"]:
        t["special"] = t["content"] in SPECIAL_TOKENS
    tok = Tokenizer.from_str(json.dumps(j))
    ids = {t: tok.token_to_id(t) for t in ALL_ADDED}
    assert [ids[t] for t in ALL_ADDED] == list(range(len(ALL_ADDED))), ids
    return tok


def tokenizer_config():
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": t in SPECIAL_TOKENS}
            for i, t in enumerate(ALL_ADDED)
        },
    }


# ----------------------------------------------------------------------------------------------
# Step 2c: model. Backbone: transformers' NemotronHForCausalLM. MTP: the module below.
# ----------------------------------------------------------------------------------------------

PATTERN = "MEM*EM"
MTP_PATTERN = "*E"
PATTERN_TO_TYPE = {"M": "linear_attention", "E": "moe", "*": "full_attention", "-": "mlp"}
MODEL = dict(
    hidden_size=256,
    num_attention_heads=4, num_key_value_heads=2, head_dim=64,
    mamba_num_heads=8, mamba_head_dim=32, n_groups=2, ssm_state_size=32, conv_kernel=4, chunk_size=64,
    intermediate_size=512,
    n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128, moe_shared_expert_intermediate_size=256,
    moe_latent_size=128, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.0,
    layer_norm_epsilon=1e-5, time_step_min=0.001, time_step_max=0.1,
    bos_token_id=1, eos_token_id=4, pad_token_id=0, max_position_embeddings=4096,
)
DT_FLOOR = 0.002  # a hinge penalty keeps softplus(dt_raw + dt_bias) above this (transformers clamps at 0.001 in prefill only)


def torch_modules():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        """NemotronHRMSNorm / vLLM RMSNorm: normalise in fp32, cast back, then scale."""

        def __init__(self, H, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(H))
            self.eps = eps

        def forward(self, x):
            dt = x.dtype
            y = x.float()
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
            return self.weight * y.to(dt)

    class Attention(nn.Module):
        """Causal GQA attention without positional encoding or bias (REFERENCE.md §4)."""

        def __init__(self, c):
            super().__init__()
            H, self.nq, self.nkv, self.hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
            self.q_proj = nn.Linear(H, self.nq * self.hd, bias=False)
            self.k_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
            self.v_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
            self.o_proj = nn.Linear(self.nq * self.hd, H, bias=False)

        def forward(self, x):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, self.nq, self.hd).transpose(1, 2)
            k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
            v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
            rep = self.nq // self.nkv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            if hasattr(F, "scaled_dot_product_attention"):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # torch < 2.0
                s = (q @ k.transpose(-1, -2)) * self.hd ** -0.5
                s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1), float("-inf"))
                o = torch.softmax(s.float(), -1).to(q.dtype) @ v
            return self.o_proj(o.transpose(1, 2).reshape(B, T, self.nq * self.hd))

    class Gate(nn.Module):
        def __init__(self, E, H):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(E, H))
            self.register_buffer("e_score_correction_bias", torch.zeros(E))

    class Mlp(nn.Module):
        def __init__(self, din, inter):
            super().__init__()
            self.up_proj = nn.Linear(din, inter, bias=False)
            self.down_proj = nn.Linear(inter, din, bias=False)

        def forward(self, x):
            return self.down_proj(torch.relu(self.up_proj(x)) ** 2)

    class LatentMoE(nn.Module):
        """REFERENCE.md §5: sigmoid router in fp32, bias for the choice only, top-k, renormalised, scaled;
        routed experts on fc1_latent_proj(u), weighted sum, fc2_latent_proj; shared expert on u."""

        def __init__(self, c):
            super().__init__()
            H, E, L = c["hidden_size"], c["n_routed_experts"], c["moe_latent_size"]
            self.E, self.k = E, c["num_experts_per_tok"]
            self.norm_topk, self.scale = c["norm_topk_prob"], c["routed_scaling_factor"]
            self.gate = Gate(E, H)
            self.experts = nn.ModuleList([Mlp(L, c["moe_intermediate_size"]) for _ in range(E)])
            self.shared_experts = Mlp(H, c["moe_shared_expert_intermediate_size"])
            self.fc1_latent_proj = nn.Linear(H, L, bias=False)
            self.fc2_latent_proj = nn.Linear(L, H, bias=False)
            self.last_choice = None

        def route(self, u2):
            s = F.linear(u2.float(), self.gate.weight.float()).sigmoid()
            idx = (s + self.gate.e_score_correction_bias.float()).topk(self.k, dim=-1).indices
            w = s.gather(1, idx)
            if self.norm_topk:
                w = w / (w.sum(-1, keepdim=True) + 1e-20)
            return idx, w * self.scale

        def forward(self, u):
            shape = u.shape
            u2 = u.reshape(-1, shape[-1])
            idx, w = self.route(u2)
            self.last_choice = idx.detach()
            dense = torch.zeros(u2.shape[0], self.E, device=u.device, dtype=torch.float32).scatter(1, idx, w)
            v = self.fc1_latent_proj(u2)
            up = torch.stack([e.up_proj.weight for e in self.experts])      # [E, I, L]
            down = torch.stack([e.down_proj.weight for e in self.experts])  # [E, L, I]
            a = torch.relu(torch.einsum("nl,eil->nei", v, up.to(v.dtype))) ** 2
            y = torch.einsum("nei,eli->nel", a, down.to(a.dtype))
            r = (y.float() * dense.unsqueeze(-1)).sum(1).to(v.dtype)
            return (self.fc2_latent_proj(r) + self.shared_experts(u2)).view(shape)

    class MtpBlock(nn.Module):
        def __init__(self, c, kind, first, last):
            super().__init__()
            H, eps = c["hidden_size"], c["layer_norm_epsilon"]
            if first:
                self.enorm = RMSNorm(H, eps)
                self.hnorm = RMSNorm(H, eps)
                self.eh_proj = nn.Linear(2 * H, H, bias=False)
            self.norm = RMSNorm(H, eps)
            self.mixer = Attention(c) if kind == "*" else LatentMoE(c)
            if last:
                self.final_layernorm = RMSNorm(H, eps)

    class Mtp(nn.Module):
        """state_dict names = the released checkpoint's mtp.* names without the prefix."""

        def __init__(self, c, pattern=MTP_PATTERN):
            super().__init__()
            self.layers = nn.ModuleList([MtpBlock(c, ch, j == 0, j == len(pattern) - 1) for j, ch in enumerate(pattern)])

        def forward(self, emb_next, h):
            """emb_next = embeddings(tok[i+1]), h = main hidden after norm_f at i  ->  hidden for tok[i+2]"""
            L0 = self.layers[0]
            x = L0.eh_proj(torch.cat([L0.enorm(emb_next), L0.hnorm(h)], dim=-1))
            for blk in self.layers:
                x = x + blk.mixer(blk.norm(x))
            return self.layers[-1].final_layernorm(x)

        def moes(self):
            return [b.mixer for b in self.layers if isinstance(b.mixer, LatentMoE)]

    def init_mtp(mtp, std=0.02, seed=7):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in mtp.named_parameters():
                if name.endswith("norm.weight") or "enorm" in name or "hnorm" in name or "final_layernorm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
                    if name.endswith(("o_proj.weight", "down_proj.weight", "fc2_latent_proj.weight")):
                        p.mul_(1 / math.sqrt(2 * len(mtp.layers)))
        return mtp

    return {"RMSNorm": RMSNorm, "Mtp": Mtp, "LatentMoE": LatentMoE, "init_mtp": init_mtp}


def load_make_fixtures():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(HERE, "make-fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mtp_numpy(w, cfg, emb_next, h):
    """float64 numpy MTP head (independent of the torch module) -> hidden after final_layernorm."""
    import numpy as np
    eps = cfg["layer_norm_epsilon"]

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * g

    p0 = "mtp.layers.0."
    x = np.concatenate([rms(emb_next, w[p0 + "enorm.weight"]), rms(h, w[p0 + "hnorm.weight"])], -1) @ w[p0 + "eh_proj.weight"].T
    T = x.shape[0]
    for j, ch in enumerate(MTP_PATTERN):
        p = f"mtp.layers.{j}."
        u = rms(x, w[p + "norm.weight"])
        m = p + "mixer."
        if ch == "*":
            nq, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
            q = (u @ w[m + "q_proj.weight"].T).reshape(T, nq, hd)
            k = (u @ w[m + "k_proj.weight"].T).reshape(T, nkv, hd)
            v = (u @ w[m + "v_proj.weight"].T).reshape(T, nkv, hd)
            o = np.zeros((T, nq, hd))
            mask = np.triu(np.full((T, T), -np.inf), 1)
            for a in range(nq):
                kv = a // (nq // nkv)
                s = q[:, a] @ k[:, kv].T / math.sqrt(hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                o[:, a] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
            out = o.reshape(T, nq * hd) @ w[m + "o_proj.weight"].T
        else:
            k = cfg["num_experts_per_tok"]
            s = 1 / (1 + np.exp(-(u @ w[m + "gate.weight"].T)))
            vv = u @ w[m + "fc1_latent_proj.weight"].T
            r = np.zeros_like(vv)
            for t in range(T):
                chosen = np.argsort(-(s[t] + w[m + "gate.e_score_correction_bias"]), kind="stable")[:k]
                wt = s[t][chosen]
                wt = wt / (wt.sum() + 1e-20) * cfg["routed_scaling_factor"]
                for e, we in zip(chosen, wt):
                    a_ = np.maximum(vv[t] @ w[m + f"experts.{e}.up_proj.weight"].T, 0) ** 2
                    r[t] += we * (a_ @ w[m + f"experts.{e}.down_proj.weight"].T)
            a_ = np.maximum(u @ w[m + "shared_experts.up_proj.weight"].T, 0) ** 2
            out = r @ w[m + "fc2_latent_proj.weight"].T + a_ @ w[m + "shared_experts.down_proj.weight"].T
        x = x + out
    return rms(x, w[f"mtp.layers.{len(MTP_PATTERN) - 1}.final_layernorm.weight"])


def write_safetensors(tensors, path):
    """{name: torch tensor} -> safetensors file (sorted names, metadata format=pt)."""
    import torch
    codes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    import numpy as np
    import torch
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = bytearray(data[8 + n + a:8 + n + b])
        if info["dtype"] == "BF16":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype={"F32": np.float32, "F16": np.float16}[info["dtype"]]).copy())
        out[name] = t.reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------------------------
# Step 2d: training
# ----------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, args, tok, cfg_kw, device):
        import torch
        from transformers import NemotronHConfig, NemotronHForCausalLM
        self.torch, self.args, self.tok, self.device = torch, args, tok, device
        self.cfg_kw = cfg_kw
        torch.manual_seed(args.seed)
        self.cfg = NemotronHConfig(layers_block_type=[PATTERN_TO_TYPE[c] for c in PATTERN], use_mamba_kernels=False,
                                   tie_word_embeddings=False, **cfg_kw)
        self.model = NemotronHForCausalLM(self.cfg)
        M = torch_modules()
        self.M = M
        self.mtp = M["init_mtp"](M["Mtp"](cfg_kw), std=0.02, seed=args.seed)
        self.backbone = self.model.model
        self.layers = list(self.backbone.layers)
        # dt_bias: log-uniform dt in [0.005, 0.1] (transformers' init starts at time_step_min = 0.001)
        g = torch.Generator().manual_seed(args.seed + 1)
        self.mamba = []
        self.moe = []
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                mx = layer.mixer
                if hasattr(mx, "dt_bias") and hasattr(mx, "in_proj"):
                    nh = mx.dt_bias.shape[0]
                    dt = torch.exp(torch.rand(nh, generator=g) * (math.log(0.1) - math.log(0.005)) + math.log(0.005))
                    mx.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
                    self.mamba.append((i, mx))
                if hasattr(mx, "gate") and hasattr(mx.gate, "e_score_correction_bias"):
                    self.moe.append((i, mx))
        self.model.to(device)
        self.mtp.to(device)
        self.n_params = {"backbone": sum(p.numel() for p in self.model.parameters()),
                         "mtp": sum(p.numel() for p in self.mtp.parameters())}
        log(f"model: pattern {PATTERN} + MTP {MTP_PATTERN}, params {self.n_params}, "
            f"mamba layers {[i for i, _ in self.mamba]}, moe layers {[i for i, _ in self.moe]}")
        assert len(self.mamba) == PATTERN.count("M") and len(self.moe) == PATTERN.count("E"), "layer discovery failed"
        # hooks: expert loads (for the bias update) and the dt hinge penalty
        self.loads = {i: torch.zeros(cfg_kw["n_routed_experts"], device=device) for i, _ in self.moe}
        self.loads["mtp"] = torch.zeros(cfg_kw["n_routed_experts"], device=device)
        self.dt_pen = []
        self.hooks_seen = {"moe": 0, "dt": 0}
        k = cfg_kw["num_experts_per_tok"]
        x0 = math.log(math.expm1(DT_FLOOR))

        def moe_hook(i, mx):
            def hook(mod, args):
                if not (mod.training and torch.is_grad_enabled()) or not args:
                    return
                with torch.no_grad():
                    x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                    s = torch.nn.functional.linear(x, mx.gate.weight.float()).sigmoid() + mx.gate.e_score_correction_bias.float()
                    idx = s.topk(k, dim=-1).indices
                    self.loads[i] += torch.bincount(idx.flatten(), minlength=self.loads[i].shape[0]).float()
                    self.hooks_seen["moe"] += 1
            return hook

        def dt_hook(mx):
            def hook(mod, args, out):
                if not (mod.training and torch.is_grad_enabled()):
                    return
                nh = mx.dt_bias.shape[0]
                xdt = out[..., -nh:].float() + mx.dt_bias.float()
                self.dt_pen.append(torch.relu(x0 - xdt).pow(2).mean())
                self.hooks_seen["dt"] += 1
            return hook

        self.moe_hook = moe_hook
        for i, mx in self.moe:
            mx.register_forward_pre_hook(moe_hook(i, mx))
        for i, mx in self.mamba:
            mx.in_proj.register_forward_hook(dt_hook(mx))
        params = list(self.model.named_parameters()) + [("mtp." + n, p) for n, p in self.mtp.named_parameters()]
        decay = [p for n, p in params if p.ndim == 2]
        no_decay = [p for n, p in params if p.ndim != 2]
        fused = {"fused": True} if device.startswith("cuda") else {}
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                     lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **fused)
        self.use_autocast = device.startswith("cuda")
        self.history = []

    def losses(self, batch):
        torch = self.torch
        F = torch.nn.functional
        inp = batch[:, :-1]
        V = self.cfg_kw["vocab_size"]
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_autocast else _null()
        with ctx:
            h = self.backbone(input_ids=inp, use_cache=False).last_hidden_state
            logits = self.model.lm_head(h)
            loss = F.cross_entropy(logits.float().reshape(-1, V), batch[:, 1:].reshape(-1))
            emb = self.model.get_input_embeddings()(inp[:, 1:])
            mh = self.mtp(emb, h[:, :-1])
            mlogits = self.model.lm_head(mh)
            mloss = F.cross_entropy(mlogits.float().reshape(-1, V), batch[:, 2:].reshape(-1))
        return loss, mloss

    def step(self, batch, lr):
        torch = self.torch
        for gp in self.opt.param_groups:
            gp["lr"] = lr
        self.model.train()
        self.mtp.train()
        self.dt_pen.clear()
        try:
            loss, mloss = self.losses(batch)
        except RuntimeError as ex:
            if not self.use_autocast:
                raise
            log(f"WARNING: the bf16 autocast step failed ({ex}); training in float32 (TF32) from now on")
            self.use_autocast = False
            self.dt_pen.clear()
            loss, mloss = self.losses(batch)
        if self.hooks_seen["moe"] == 0 and not getattr(self, "gate_hooks", False):
            log("WARNING: the MoE mixers were not called with a positional input; counting expert loads at the gates")
            for i, mx in self.moe:
                mx.gate.register_forward_pre_hook(self.moe_hook(i, mx))
            self.gate_hooks = True
        pen = torch.stack(self.dt_pen).sum() if self.dt_pen else torch.zeros((), device=batch.device)
        total = loss + self.args.mtp_weight * mloss + self.args.dt_penalty * pen
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        gn = torch.nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.mtp.parameters()), 1.0)
        self.opt.step()
        with torch.no_grad():  # auxiliary-loss-free balancing: bias += rate * sign(mean load - load)
            for moe in self.mtp.moes():
                if moe.last_choice is not None:
                    self.loads["mtp"] += torch.bincount(moe.last_choice.flatten(), minlength=self.loads["mtp"].shape[0]).float()
            imb = {}
            for key, load in self.loads.items():
                if load.sum() > 0:
                    bias = self.mtp.moes()[0].gate.e_score_correction_bias if key == "mtp" else dict(self.moe)[key].gate.e_score_correction_bias
                    bias += self.args.bias_rate * torch.sign(load.mean() - load)
                    imb[key] = load.max() / load.mean()
                load.zero_()
        return loss.detach(), mloss.detach(), pen.detach(), gn.detach(), imb

    def evaluate(self, batches):
        torch = self.torch
        self.model.eval()
        self.mtp.eval()
        ls, ms = [], []
        with torch.no_grad():
            for b in batches:
                l, m = self.losses(b)
                ls.append(float(l))
                ms.append(float(m))
        return (sum(ls) / len(ls), sum(ms) / len(ms)) if ls else (float("nan"), float("nan"))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def build_streams(tok, docs, chats, device):
    """Token streams on the device: corpus documents and conversations, each followed by </s>."""
    import numpy as np
    import torch
    eos = SPECIAL_TOKENS.index("</s>")

    def stream(texts):
        encs = tok.encode_batch(texts)
        lens = np.array([len(e.ids) + 1 for e in encs], dtype=np.int64)
        flat = np.empty(int(lens.sum()), dtype=np.int32)
        pos = 0
        for e, n in zip(encs, lens):
            flat[pos:pos + n - 1] = e.ids
            flat[pos + n - 1] = eos
            pos += n
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        return torch.from_numpy(flat).to(device), torch.from_numpy(starts).to(device)

    return stream(docs), stream(chats)


def make_batch(gen, corpus, chat, B, T, chat_frac, device):
    import torch
    nc = int(round(B * chat_frac))
    ar = torch.arange(T + 1, device=device)
    (cs, _), (hs, hstarts) = corpus, chat
    parts = []
    if nc:
        si = torch.randint(len(hstarts), (nc,), generator=gen).to(device)
        st = hstarts[si].clamp(max=len(hs) - T - 1)
        parts.append(hs[st[:, None] + ar])
    if B - nc:
        so = torch.randint(len(cs) - T - 1, (B - nc,), generator=gen).to(device)
        parts.append(cs[so[:, None] + ar])
    return torch.cat(parts).long()


def train_loop(tr, corpus, chat, budget_s, args, partial_cb=None):
    import torch
    gen = torch.Generator().manual_seed(args.seed + 2)
    t0 = time.time()
    step, last_log, last_partial = 0, t0, t0
    toks = 0
    while True:
        el = time.time() - t0
        if el >= budget_s or (args.max_steps and step >= args.max_steps):
            break
        frac = min(1.0, el / budget_s)
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        batch = make_batch(gen, corpus, chat, args.batch, args.seq, args.chat_frac, tr.device)
        loss, mloss, pen, gn, imb = tr.step(batch, lr)
        step += 1
        toks += batch.shape[0] * args.seq
        if step == 1 or step % args.log_every == 0 or time.time() - last_log > 30:
            l, m, p, g = float(loss), float(mloss), float(pen), float(gn)
            if not math.isfinite(l):
                raise RuntimeError(f"loss is {l} at step {step}")
            dt = time.time() - t0
            rec = {"step": step, "seconds": round(dt, 1), "lr": lr, "loss": l, "mtp_loss": m, "dt_penalty": p, "grad_norm": g,
                   "tokens": toks, "max_over_mean_expert_load": {str(k): round(float(v), 2) for k, v in imb.items()}}
            tr.history.append(rec)
            log(f"step {step:5d} {dt:6.1f}s lr {lr:.2e} loss {l:.4f} mtp {m:.4f} dtpen {p:.2e} gnorm {g:.2f} "
                f"tok/s {toks / max(dt, 1e-9):,.0f} load {rec['max_over_mean_expert_load']}")
            last_log = time.time()
        if partial_cb and time.time() - last_partial > args.partial_every:
            partial_cb(step)
            last_partial = time.time()
    return step, time.time() - t0, toks


# ----------------------------------------------------------------------------------------------
# Step 2e: export in the released layout, reference logits, MTP acceptance, samples
# ----------------------------------------------------------------------------------------------

def export_checkpoint(tr, tok, d, versions):
    """config.json (released spelling + MTP keys), model.safetensors (bf16; router bias f32), generation_config.json,
    tokenizer.json, tokenizer_config.json."""
    import tempfile
    import torch
    mf = load_make_fixtures()
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "reference"))
    with tempfile.TemporaryDirectory() as tmp:
        tr.model.save_pretrained(tmp)
        saved = {}
        for fn in sorted(os.listdir(tmp)):
            if fn.endswith(".safetensors"):
                from safetensors.torch import load_file
                saved.update(load_file(os.path.join(tmp, fn)))
        with open(os.path.join(tmp, "config.json")) as f:
            saved_cfg = json.load(f)
    canon = mf.canonicalize(saved)
    for k, v in tr.mtp.state_dict().items():
        canon["mtp." + k] = v
    out = {}
    for k, v in canon.items():
        v = v.detach().float().cpu()
        out[k] = v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)
    write_safetensors(out, os.path.join(d, "model.safetensors"))
    c = dict(saved_cfg)
    for k in ("layers_block_type", "layer_types", "mtp_layers_block_type", "dtype", "time_step_limit", "use_mamba_kernels"):
        c.pop(k, None)
    c.update({"hybrid_override_pattern": PATTERN, "num_hidden_layers": len(PATTERN), "mtp_hybrid_override_pattern": MTP_PATTERN,
              "num_nextn_predict_layers": 1, "torch_dtype": "bfloat16", "norm_eps": c.get("layer_norm_epsilon", 1e-5),
              "mamba_proj_bias": False, "use_mamba_kernels": True, "architectures": ["NemotronHForCausalLM"],
              "vocab_size": tr.cfg_kw["vocab_size"]})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(sorted(c.items())), f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": [2, 4], "pad_token_id": 0, "transformers_version": versions["transformers"]}, f, indent=2)
        f.write("\n")
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)
        f.write("\n")
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sorted(out.items())}, saved_cfg


class Reference:
    """The exported checkpoint loaded back: transformers for the backbone (float32: bf16 upcast), the MTP module
    with the file's mtp.* tensors."""

    def __init__(self, d, cfg_kw, device):
        import torch
        from transformers import NemotronHForCausalLM
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        kw = dict(dtype=torch.float32, output_loading_info=True, attn_implementation="eager", use_mamba_kernels=False)
        try:
            m, info = NemotronHForCausalLM.from_pretrained(d, experts_implementation="eager", **kw)
        except TypeError:
            m, info = NemotronHForCausalLM.from_pretrained(d, **kw)
        self.load_problems = {k: [str(x) for x in v] for k, v in info.items() if v}
        unexpected = [k for k in self.load_problems.get("unexpected_keys", []) if not k.startswith("mtp.")]
        assert not self.load_problems.get("missing_keys") and not unexpected, self.load_problems
        self.m = m.to(device).eval()
        M = torch_modules()
        self.mtp = M["Mtp"](cfg_kw)
        sd = {k[4:]: v.float() for k, v in read_safetensors(os.path.join(d, "model.safetensors")).items() if k.startswith("mtp.")}
        self.mtp.load_state_dict(sd, strict=True)
        self.mtp.to(device).eval()
        self.torch, self.device = torch, device

    def run(self, ids):
        """ids [B, L] -> main logits [B, L, V], MTP logits [B, L-1, V] (row i: from h[i] and ids[i+1], for ids[i+2]),
        hidden [B, L, H]."""
        torch = self.torch
        with torch.no_grad():
            x = torch.as_tensor(ids, device=self.device).long()
            if x.ndim == 1:
                x = x[None]
            h = self.m.model(input_ids=x, use_cache=False).last_hidden_state
            logits = self.m.lm_head(h).float()
            mh = self.mtp(self.m.get_input_embeddings()(x[:, 1:]), h[:, :-1])
            mlogits = self.m.lm_head(mh).float()
        return logits, mlogits, h

    def greedy(self, prompt, n, stop):
        torch = self.torch
        ids = list(prompt)
        with torch.no_grad():
            try:
                out = self.m(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
                pkv, last = out.past_key_values, out.logits[0, -1]
                for _ in range(n):
                    t = int(last.argmax())
                    ids.append(t)
                    if t in stop:
                        break
                    out = self.m(input_ids=torch.tensor([[t]], device=self.device), past_key_values=pkv, use_cache=True)
                    pkv, last = out.past_key_values, out.logits[0, -1]
            except Exception as ex:  # noqa: BLE001
                log(f"cached generation failed ({ex!r}); recomputing the whole sequence per token")
                ids = list(prompt)
                for _ in range(n):
                    t = int(self.run(ids)[0][0, -1].argmax())
                    ids.append(t)
                    if t in stop:
                        break
        return ids[len(prompt):]

    def sample(self, prompt, n, stop, temperature, seed):
        torch = self.torch
        g = torch.Generator(device=self.device).manual_seed(seed)
        ids = list(prompt)
        with torch.no_grad():
            out = self.m(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            pkv, last = out.past_key_values, out.logits[0, -1]
            for _ in range(n):
                p = torch.softmax(last.float() / temperature, -1)
                t = int(torch.multinomial(p, 1, generator=g))
                ids.append(t)
                if t in stop:
                    break
                out = self.m(input_ids=torch.tensor([[t]], device=self.device), past_key_values=pkv, use_cache=True)
                pkv, last = out.past_key_values, out.logits[0, -1]
        return ids[len(prompt):]


def acceptance(ref, seqs, start=None):
    """Greedy MTP acceptance: at position i the draft argmax(MTP(h[i], tok[i+1])) is compared with the main model's
    next greedy token argmax(main[i+1]). Also: MTP top-1 vs the text's tok[i+2], main top-1 vs tok[i+1].
    `start[j]`: first i counted in sequence j (to count only generated tokens)."""
    acc = n = n2 = mtp_hit = main_hit = 0
    for j, s in enumerate(seqs):
        if len(s) < 3:
            continue
        logits, mlogits, _ = ref.run(s)
        g = logits[0].argmax(-1)
        dr = mlogits[0].argmax(-1)
        L = len(s)
        i0 = start[j] if start else 0
        if i0 > L - 2:
            continue
        tgt = ref.torch.as_tensor(s, device=ref.device)
        acc += int((dr[i0:L - 1] == g[i0 + 1:L]).sum())
        mtp_hit += int((dr[i0:L - 2] == tgt[i0 + 2:L]).sum())
        main_hit += int((g[i0:L - 1] == tgt[i0 + 1:L]).sum())
        n += L - 1 - i0
        n2 += max(0, L - 2 - i0)
    return {"positions": n, "acceptance": acc / max(n, 1), "mtp_top1_vs_text": mtp_hit / max(n2, 1),
            "main_top1_vs_text": main_hit / max(n, 1)}


REF_CANDIDATES = [
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What does the gzip command do?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Which command can I use to list directory contents?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 17 + 25?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Who are you?"}],
    [{"role": "user", "content": "What license does the package bash use?"}],
    [{"role": "user", "content": "Create a JSON object for a person named Maya, aged 31, who lives in Lisbon."}],
]

SAMPLE_CHATS = [
    ([{"role": "user", "content": "hello"}], None),
    ([{"role": "user", "content": "Who are you?"}], None),
    ([{"role": "user", "content": "What does the tar command do?"}], None),
    ([{"role": "user", "content": "Which command can I use to copy files and directories?"}], None),
    ([{"role": "user", "content": "What is 48 + 37?"}], None),
    ([{"role": "user", "content": "What is 12 * 7?"}], None),
    ([{"role": "user", "content": "Create a JSON object for a person named Maya, aged 31, who lives in Lisbon."}], None),
    ([{"role": "user", "content": "What license does the package gzip use?"}], None),
    ([{"role": "user", "content": "What's the weather in Oslo?"}], ["get_weather", "calculator"]),
    ([{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What time is it in Tokyo?"}], ["get_time", "get_weather"]),
    ([{"role": "user", "content": "Which version of bash is installed?"}], ["package_info", "run_command"]),
    ([{"role": "user", "content": "What's the weather in Oslo?"},
      {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", city="Oslo")]},
      {"role": "tool", "content": _j({"city": "Oslo", "temperature": 4, "unit": "celsius", "condition": "snowy", "humidity": 81})}],
     ["get_weather"]),
]


def reference_fixture(ref, tok, d, cfg_kw, mf, N=6):
    """Pick a prompt (chat template, system + user) whose logits have clear top-1 margins and router margins, record
    transformers' logits as the other fixtures do, plus the MTP logits."""
    import numpy as np
    V = cfg_kw["vocab_size"]
    best = None
    for msgs in REF_CANDIDATES:
        text = render_chat(msgs, add_generation_prompt=True)
        prompt = tok.encode(text).ids
        feed = ref.greedy(prompt, N, set())  # exactly N tokens (may run past <|im_end|>)
        lg_p = ref.run(prompt)[0][0].double().cpu().numpy()
        lg_f, ml_f, _ = ref.run(prompt + feed)
        full = lg_f[0].double().cpu().numpy()
        T = len(prompt)
        st = {}
        npref = mf.numpy_reference(d, prompt + feed, stats=st)
        worst, mism = mf.rel_l2_rows(npref, full)
        margin = min(mf.top_margin(lg_p), mf.top_margin(full[T:]))
        rmargin = min(r["min_expert_margin"] for r in st["router"])
        greedy_ok = [int(np.argmax(full[T - 1 + i])) == feed[i] for i in range(N)]
        score = min(margin / 2e-3, rmargin / 1e-4, 1.0) if st["min_dt"] > 0.0015 and not mism and all(greedy_ok) else -1
        cand = dict(msgs=msgs, text=text, prompt=prompt, feed=feed, prefill=lg_p, full=full, mtp=ml_f[0].double().cpu().numpy(),
                    np_worst=worst, np_mism=mism, margin=margin, rmargin=rmargin, st=st, score=score, greedy_ok=greedy_ok, npref=npref)
        log(f"reference candidate {msgs[-1]['content']!r}: T={T} top1-top2 margin {margin:.2e}, router margin {rmargin:.2e}, "
            f"min dt {st['min_dt']:.4f}, numpy f64 rel L2 {worst:.2e}, argmax mismatches {mism}, score {score:.2f}")
        if best is None or score > best["score"]:
            best = cand
        if score >= 1.0:
            break
    c = best
    T = len(c["prompt"])
    rd = os.path.join(d, "reference")
    mf.write_f32(os.path.join(rd, "prefill_logits.f32"), c["prefill"])
    mf.write_f32(os.path.join(rd, "decode_logits.f32"), c["full"][T:])
    mf.write_f32(os.path.join(rd, "mtp_logits.f32"), c["mtp"])
    with open(os.path.join(rd, "prompt_ids.json"), "w") as f:
        json.dump(c["prompt"], f)
        f.write("\n")
    with open(os.path.join(rd, "feed_ids.json"), "w") as f:
        json.dump(c["feed"], f)
        f.write("\n")
    with open(os.path.join(rd, "chat_messages.json"), "w") as f:
        json.dump({"messages": c["msgs"], "add_generation_prompt": True, "rendered": c["text"]}, f, indent=2)
        f.write("\n")
    # MTP: the torch module against the numpy float64 head, on the exported weights
    w, _ = mf.load_checkpoint_numpy(d)
    seq = c["prompt"] + c["feed"]
    hid = ref.run(seq)[2][0].double().cpu().numpy()
    emb = w["backbone.embeddings.weight"][np.asarray(seq[1:])]
    mtp_np = mtp_numpy(w, cfg_kw, emb, hid[:-1]) @ w["lm_head.weight"].T
    mtp_worst, mtp_mism = mf.rel_l2_rows(mtp_np, c["mtp"])
    drafts = c["mtp"].argmax(-1)
    main_next = c["full"].argmax(-1)
    return {
        "prompt_text": c["text"], "prompt_len": T, "feed": c["feed"], "feed_text": tok.decode(c["feed"], skip_special_tokens=False),
        "greedy_feed_matches_full_forward": c["greedy_ok"],
        "shapes": {"prefill_logits": [T, V], "decode_logits": [N, V], "mtp_logits": [T + N - 1, V]},
        "logits_stats": {"max_abs": float(np.abs(c["full"]).max()), "std": float(c["full"].std())},
        "min_top1_top2_margin": c["margin"], "min_router_margin": c["rmargin"], "min_dt": c["st"]["min_dt"],
        "time_step_min": 0.001, "dt_clamp_can_matter": bool(c["st"]["min_dt"] <= 0.001),
        "router": c["st"]["router"],
        "numpy_f64_reference": {"worst_row_rel_l2_vs_transformers_f32": c["np_worst"], "argmax_mismatch_rows": c["np_mism"],
                                "max_abs": float(np.abs(c["npref"] - c["full"]).max())},
        "mtp_logits": {
            "file": "reference/mtp_logits.f32", "rows": T + N - 1,
            "row_i": "MTP logits from h[i] (main hidden after norm_f at position i of prompt+feed) and token (prompt+feed)[i+1]; "
                     "they predict token i+2",
            "computed_by": "scripts/train-demo.py Mtp module, float32, weights from model.safetensors (bf16 upcast)",
            "numpy_f64_worst_row_rel_l2": mtp_worst, "numpy_f64_argmax_mismatch_rows": mtp_mism,
            "draft_equals_main_next_greedy": [bool(drafts[i] == main_next[i + 1]) for i in range(T + N - 1)],
        },
    }


def samples(ref, tok, out, cap=96):
    res = []
    stop = {2, 4}
    for msgs, tools in SAMPLE_CHATS:
        tl = [TOOLS[n] for n in tools] if tools else None
        text = render_chat(msgs, tl, add_generation_prompt=True)
        prompt = tok.encode(text).ids
        gen = ref.greedy(prompt, cap, stop)
        reply = tok.decode(gen, skip_special_tokens=False)
        acc = acceptance(ref, [prompt + gen], [len(prompt) - 1])
        res.append({"messages": msgs, "tools": tools, "greedy_reply": reply, "tokens": len(gen), "mtp_acceptance": acc["acceptance"]})
        log(f"--- {msgs[-1]['role']}: {msgs[-1]['content'][:80]!r} (tools: {tools})\n{reply}\n    [MTP acceptance on this reply: {acc['acceptance']:.2f}]")
    for msgs, tools in SAMPLE_CHATS[:3]:
        text = render_chat(msgs, None, add_generation_prompt=True)
        prompt = tok.encode(text).ids
        gen = ref.sample(prompt, cap, stop, 0.8, 1)
        res.append({"messages": msgs, "sampled_reply_t0.8_seed1": tok.decode(gen, skip_special_tokens=False)})
        log(f"--- sampled (T=0.8): {msgs[-1]['content']!r}\n{res[-1]['sampled_reply_t0.8_seed1']}")
    for p in ["The gzip command", "NAME\nls - list directory contents\n\nDESCRIPTION\n", "This program is free software;"]:
        ids = tok.encode(p).ids
        gen = ref.greedy(ids, min(cap, 64), {2})
        res.append({"completion_prompt": p, "greedy": tok.decode(gen, skip_special_tokens=False)})
        log(f"--- completion of {p!r}:\n{p}{res[-1]['greedy']}")
    out["samples"] = res


def tar_dir(d, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w:gz") as t:
        t.add(d, arcname=os.path.basename(d.rstrip("/")))
    os.replace(tmp, path)
    log(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def cmd_train(args):
    t_start = time.time()
    import numpy as np
    import torch
    import transformers
    import tokenizers
    import safetensors
    deadline = args.deadline or (t_start + 10 ** 6)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "safetensors": safetensors.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
                "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"}
    log("versions:", versions)
    if args.dry_run:
        args.batch, args.seq, args.max_steps, args.n_chat, args.vocab = 4, 128, 10, 1500, 700
        args.log_every = 1
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    random.seed(args.seed)

    # data
    facts, docs = load_data(args.data, args.dry_run)
    train_docs = [d["text"] for d in docs if not heldout(d["path"])]
    held_docs = [d["text"] for d in docs if heldout(d["path"])][:40] or [docs[-1]["text"]]
    chats = synth_texts(facts, args.seed, args.n_chat)
    held_chats = synth_texts(facts, args.seed + 1000, 200)
    log(f"data: {len(train_docs)} corpus documents ({sum(map(len, train_docs)) / 1e6:.1f} M chars), {len(held_docs)} held out; "
        f"{len(chats)} conversations ({sum(map(len, chats)) / 1e6:.1f} M chars) [{time.time() - t_start:.0f}s]")

    # tokenizer
    t0 = time.time()
    tok = train_tokenizer(train_docs + chats[:20000], args.vocab)
    V = tok.get_vocab_size()
    log(f"tokenizer: vocab {V} in {time.time() - t0:.1f}s; 'hello world' -> {tok.encode('hello world').tokens}")
    corpus, chat = build_streams(tok, train_docs, chats, device)
    hcorpus, hchat = build_streams(tok, held_docs, held_chats, device)
    n_corpus, n_chat = int(corpus[0].numel()), int(chat[0].numel())
    log(f"tokens: corpus {n_corpus:,} ({sum(map(len, train_docs)) / n_corpus:.2f} chars/token), chat {n_chat:,} "
        f"[{time.time() - t_start:.0f}s]")

    cfg_kw = dict(MODEL, vocab_size=V)
    tr = Trainer(args, tok, cfg_kw, device)
    eval_gen = torch.Generator().manual_seed(12345)
    eval_corpus = [make_batch(eval_gen, hcorpus, hchat, min(args.batch, 16), args.seq, 0.0, device) for _ in range(2)]
    eval_chat = [make_batch(eval_gen, hcorpus, hchat, min(args.batch, 16), args.seq, 1.0, device) for _ in range(2)]

    def partial(step):
        if not args.partial:
            return
        try:
            save_partial(step)
        except Exception as ex:  # noqa: BLE001
            log(f"WARNING: partial checkpoint failed: {ex!r}")

    def save_partial(step):
        os.makedirs(os.path.dirname(os.path.abspath(args.partial)), exist_ok=True)
        sd = {"model." + k: v.detach().to(torch.bfloat16).cpu() if v.is_floating_point() and "e_score" not in k else v.cpu()
              for k, v in tr.model.state_dict().items()}
        sd.update({"mtp." + k: v.detach().cpu() for k, v in tr.mtp.state_dict().items()})
        torch.save({"step": step, "state": sd, "tokenizer": tok.to_str(), "cfg_kw": cfg_kw}, args.partial + ".tmp")
        os.replace(args.partial + ".tmp", args.partial)
        log(f"partial checkpoint at step {step}: {args.partial}")

    reserve = 25 if args.dry_run else args.reserve
    budget = max(5.0, min(args.train_seconds, deadline - time.time() - reserve))
    log(f"training for {budget:.0f}s (deadline in {deadline - time.time():.0f}s) batch {args.batch}x{args.seq} chat fraction {args.chat_frac}")
    steps, secs, toks = train_loop(tr, corpus, chat, budget, args, partial)
    log(f"hooks seen: {tr.hooks_seen}")
    ev_c, ev_h = tr.evaluate(eval_corpus), tr.evaluate(eval_chat)
    log(f"trained {steps} steps in {secs:.0f}s ({toks:,} tokens); held-out loss corpus {ev_c[0]:.4f} (MTP {ev_c[1]:.4f}), "
        f"chat {ev_h[0]:.4f} (MTP {ev_h[1]:.4f}) [{time.time() - t_start:.0f}s]")
    biases = {str(i): [round(float(x), 4) for x in mx.gate.e_score_correction_bias] for i, mx in tr.moe}
    biases["mtp"] = [round(float(x), 4) for x in tr.mtp.moes()[0].gate.e_score_correction_bias]

    # export
    d = args.out
    history = tr.history
    tensors, saved_cfg = export_checkpoint(tr, tok, d, versions)
    log(f"exported {d}: {len(tensors)} tensors, model.safetensors {os.path.getsize(os.path.join(d, 'model.safetensors')) / 1e6:.2f} MB")
    if args.tar:
        tar_dir(d, args.tar)
    tr.opt = None
    tr.model.cpu()
    tr.mtp.cpu()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    ref = Reference(d, cfg_kw, device)
    mf = load_make_fixtures()
    meta = {"name": os.path.basename(d.rstrip("/")), "made_by": "scripts/train-demo.py", "versions": versions, "device": device,
            "dry_run": bool(args.dry_run), "load_info_problems": ref.load_problems}

    def save_meta(final):
        meta["complete"] = final
        meta["training"] = {
            "steps": steps, "seconds": round(secs, 1), "tokens": toks, "batch": args.batch, "seq": args.seq, "lr": args.lr,
            "warmup": args.warmup, "schedule": "linear warmup, cosine over the time budget to 0.1x", "optimizer": "AdamW (0.9, 0.95), wd 0.1 on matrices, clip 1.0",
            "precision": "bf16 autocast, f32 master weights" if device.startswith("cuda") else "f32",
            "mtp_loss_weight": args.mtp_weight, "dt_penalty": {"weight": args.dt_penalty, "floor": DT_FLOOR},
            "router_bias_update": f"sign rule, rate {args.bias_rate} per step (auxiliary-loss-free balancing)",
            "chat_fraction": args.chat_frac, "history": history,
            "final_logged": history[-1] if history else None, "heldout": {"corpus": {"main": ev_c[0], "mtp": ev_c[1]}, "chat": {"main": ev_h[0], "mtp": ev_h[1]}},
            "e_score_correction_bias": biases,
        }
        meta["data"] = {"corpus_documents": len(train_docs), "corpus_chars": sum(map(len, train_docs)), "corpus_tokens": n_corpus,
                        "heldout_documents": len(held_docs), "conversations": len(chats), "conversation_tokens": n_chat,
                        "tokenizer_vocab": V, "manifest": {k: v for k, v in json.load(open(os.path.join(args.data, "manifest.json"))).items() if k != "package_list"}}
        meta["config"] = dict(cfg_kw, hybrid_override_pattern=PATTERN, mtp_hybrid_override_pattern=MTP_PATTERN)
        meta["num_params"] = {"backbone": sum(int(np.prod(t["shape"])) for n, t in tensors.items() if not n.startswith("mtp.")),
                              "mtp": sum(int(np.prod(t["shape"])) for n, t in tensors.items() if n.startswith("mtp."))}
        meta["tensors"] = tensors
        meta["elapsed_s"] = round(time.time() - t_start, 1)
        meta["files_sha256"] = {}
        for root, _, fns in os.walk(d):
            for fn in sorted(fns):
                if fn != "meta.json":
                    p = os.path.join(root, fn)
                    with open(p, "rb") as f:
                        meta["files_sha256"][os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
        with open(os.path.join(d, "reference", "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, default=str)
            f.write("\n")
        if args.tar:
            tar_dir(d, args.tar)
        log(f"meta.json written ({'complete' if final else 'partial'}) [{time.time() - t_start:.0f}s]")

    meta["reference"] = reference_fixture(ref, tok, d, cfg_kw, mf)
    log(f"reference: prompt {meta['reference']['prompt_len']} tokens, feed {meta['reference']['feed_text']!r}, "
        f"numpy f64 rel L2 {meta['reference']['numpy_f64_reference']['worst_row_rel_l2_vs_transformers_f32']:.2e}, "
        f"MTP numpy rel L2 {meta['reference']['mtp_logits']['numpy_f64_worst_row_rel_l2']:.2e} [{time.time() - t_start:.0f}s]")
    # chat template: transformers' jinja against render_chat
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(d)
        s = Synth(facts, 777)
        convs = [s.conversation() for _ in range(50)]
        same = sum(at.apply_chat_template(m, tools=t, tokenize=False) == render_chat(m, t) for m, t in convs)
        msgs = REF_CANDIDATES[0]
        ids2 = at.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids2, dict) or hasattr(ids2, "keys"):
            ids2 = ids2["input_ids"]
        meta["chat_template_check"] = {"transformers_render_equal": f"{same}/50",
                                       "transformers_ids_equal": list(ids2) == tok.encode(render_chat(msgs, add_generation_prompt=True)).ids}
    except Exception as ex:  # noqa: BLE001
        meta["chat_template_check"] = {"error": repr(ex)}
    log(f"chat template check: {meta['chat_template_check']}")
    cases = []
    for s_ in [meta["reference"]["prompt_text"], "Hello, world!", "The gzip command compresses files.",
               "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call>",
               "caf\u00e9 \u2014 na\u00efve \u65e5\u672c 123 4567", "<|im_start|>user\nhi<|im_end|>", "</s><s><unk>"]:
        e = tok.encode(s_)
        cases.append({"text": s_, "ids": e.ids, "tokens": e.tokens, "decoded": tok.decode(e.ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(e.ids, skip_special_tokens=True)})
    with open(os.path.join(d, "reference", "tokenizer_cases.json"), "w") as f:
        json.dump(cases, f, indent=2, ensure_ascii=False)
        f.write("\n")
    save_meta(final=False)

    # MTP acceptance (greedy) on held-out text and on the model's own greedy replies
    acc = {}
    hc = hcorpus[0].cpu().tolist()
    win = [hc[i:i + args.seq] for i in range(0, max(1, len(hc) - args.seq), max(args.seq, (len(hc) - args.seq) // 24 or 1))][:24]
    acc["heldout_corpus"] = acceptance(ref, [w_ for w_ in win if len(w_) > 8])
    acc["heldout_chat"] = acceptance(ref, [tok.encode(t).ids for t in held_chats[:8 if args.dry_run else 48]])
    s = Synth(facts, 4242)
    gseqs, gstart = [], []
    for _ in range(4 if args.dry_run else 24):
        m_, t_ = s.conversation()
        last_user = max(i for i, x in enumerate(m_) if x["role"] in ("user", "tool"))
        prompt = tok.encode(render_chat(m_[:last_user + 1], t_, add_generation_prompt=True)).ids
        gen = ref.greedy(prompt, 8 if args.dry_run else 64, {2, 4})
        gseqs.append(prompt + gen)
        gstart.append(len(prompt) - 1)
    acc["own_greedy_replies"] = acceptance(ref, gseqs, gstart)
    log(f"MTP acceptance: {json.dumps(acc)} [{time.time() - t_start:.0f}s]")
    meta["mtp_acceptance"] = acc
    samples(ref, tok, meta, 8 if args.dry_run else 96)

    save_meta(final=True)
    log(f"done in {time.time() - t_start:.0f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="collect the corpus from this machine's Debian packages")
    c.add_argument("--out", default=".train")
    t = sub.add_parser("train", help="train, export and record the reference (GPU machine)")
    t.add_argument("--data", default=".train")
    t.add_argument("--out", required=True, help="checkpoint directory to write (named demo-chat)")
    t.add_argument("--tar", default=None, help="also write the directory as this .tar.gz (again when complete)")
    t.add_argument("--partial", default=None, help="save a bf16 training checkpoint here every --partial-every seconds")
    t.add_argument("--partial-every", type=float, default=150)
    t.add_argument("--deadline", type=float, default=None, help="unix time by which everything must be written")
    t.add_argument("--reserve", type=float, default=110, help="seconds kept after training for export and checks")
    t.add_argument("--train-seconds", type=float, default=400)
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument("--dry-run", action="store_true", help="tiny data, 10 steps, every later stage: a quick check")
    t.add_argument("--device", default=None)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--vocab", type=int, default=3072)
    t.add_argument("--n-chat", type=int, default=100_000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seq", type=int, default=512)
    t.add_argument("--chat-frac", type=float, default=0.45)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=150)
    t.add_argument("--mtp-weight", type=float, default=0.3)
    t.add_argument("--dt-penalty", type=float, default=0.1)
    t.add_argument("--bias-rate", type=float, default=1e-3)
    t.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.out)
    else:
        cmd_train(args)


if __name__ == "__main__":
    main()
