// A small Markdown renderer for problem statements (GitHub issue markdown): paragraphs,
// headings, emphasis, inline code, fenced and indented code, lists, links, blockquotes,
// rules and simple tables. It builds DOM nodes with createElement and text nodes only
// (never innerHTML), so HTML in a statement stays text; links keep only http(s) targets.
// Line breaks inside a paragraph are kept, as GitHub shows them in issues.
"use strict";

const Markdown = (() => {
  const el = (tag, attrs, children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children || []) e.append(c);
    return e;
  };
  const text = (s) => document.createTextNode(s);

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?/;
  const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])([ \t]+|$)/;
  const TABLE_RULE = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;
  const blank = (l) => /^\s*$/.test(l);
  const indent = (l) => l.match(/^ */)[0].length;
  // A line that ends a paragraph because another block starts on it.
  // (Only a bullet or a list starting at 1 may interrupt a paragraph, as in CommonMark.)
  const startsBlock = (l) => FENCE.test(l) || HEADING.test(l) || RULE.test(l) || QUOTE.test(l)
    || /^ {0,3}([-*+]|1[.)])[ \t]+\S/.test(l);

  // Markdown's h1 sits under the page's own h1/h2: statement headings start at h3.
  const headingTag = (level) => "h" + Math.min(6, level + 2);

  function blocks(lines) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (blank(line)) { i++; continue; }
      if ((m = line.match(FENCE))) {
        const close = new RegExp("^ {0,3}" + (m[1][0] === "`" ? "`" : "~") + "{" + m[1].length + ",}\\s*$");
        const body = [];
        i++;
        while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
        i++;
        const code = el("code", m[2] ? { "data-lang": m[2] } : {}, [text(body.join("\n"))]);
        out.push(el("pre", { class: "md-code" }, [code]));
        continue;
      }
      if ((m = line.match(HEADING))) {
        out.push(el(headingTag(m[1].length), {}, inline(m[2] || "")));
        i++;
        continue;
      }
      if (RULE.test(line)) { out.push(el("hr")); i++; continue; }
      if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && !blank(lines[i]) && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
          body.push(lines[i].replace(QUOTE, ""));
          i++;
        }
        out.push(el("blockquote", {}, blocks(body)));
        continue;
      }
      if (ITEM.test(line)) { i = list(lines, i, out); continue; }
      if (indent(line) >= 4) {
        const body = [];
        while (i < lines.length && (indent(lines[i]) >= 4 || blank(lines[i]))) body.push(lines[i++].slice(4));
        while (body.length && blank(body[body.length - 1])) body.pop();
        out.push(el("pre", { class: "md-code" }, [el("code", {}, [text(body.join("\n"))])]));
        continue;
      }
      if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
        i = table(lines, i, out);
        continue;
      }
      const para = [];
      while (i < lines.length && !blank(lines[i]) && (para.length === 0 || !startsBlock(lines[i]))) {
        // Text underlined with === or --- is a heading (setext).
        if (para.length && /^ {0,3}(=+|-+)[ \t]*$/.test(lines[i])) break;
        para.push(lines[i++].trim());
      }
      if (i < lines.length && para.length && /^ {0,3}(=+|-+)[ \t]*$/.test(lines[i])) {
        out.push(el(headingTag(lines[i].trim()[0] === "=" ? 1 : 2), {}, inline(para.join("\n"))));
        i++;
        continue;
      }
      out.push(el("p", {}, inline(para.join("\n"))));
    }
    return out;
  }

  // A list from lines[i]: items of the same kind, each item's lines parsed as blocks.
  function list(lines, i, out) {
    const first = lines[i].match(ITEM);
    const ordered = /\d/.test(first[2]);
    const kind = ordered ? first[2].slice(-1) : first[2];
    const listEl = el(ordered ? "ol" : "ul", ordered && parseInt(first[2], 10) !== 1 ? { start: String(parseInt(first[2], 10)) } : {});
    while (i < lines.length) {
      const m = lines[i].match(ITEM);
      if (!m || (ordered ? m[2].slice(-1) !== kind || !/\d/.test(m[2]) : m[2] !== kind)) break;
      const width = m[0].length > m[1].length + m[2].length + 4 ? m[1].length + m[2].length + 1 : m[0].length;
      const body = [lines[i].slice(Math.min(width, lines[i].length)).replace(/^[ \t]+/, "")];
      i++;
      while (i < lines.length) {
        const l = lines[i];
        if (blank(l)) {
          let j = i;
          while (j < lines.length && blank(lines[j])) j++;
          if (j < lines.length && indent(lines[j]) >= width) { while (i < j) { body.push(""); i++; } continue; }
          break;
        }
        if (indent(l) >= width) { body.push(l.slice(width)); i++; continue; }
        // A lazy continuation of the item's paragraph.
        if (!startsBlock(l) && !ITEM.test(l) && !blank(body[body.length - 1])) { body.push(l.trim()); i++; continue; }
        break;
      }
      const inner = blocks(body);
      // A one-paragraph item shows its text directly (a "tight" item).
      const li = inner.length === 1 && inner[0].tagName === "P" ? el("li", {}, [...inner[0].childNodes]) : el("li", {}, inner);
      listEl.append(li);
      let j = i;
      while (j < lines.length && blank(lines[j])) j++;
      if (j < lines.length && ITEM.test(lines[j]) && indent(lines[j]) < 4) i = j;
    }
    out.push(listEl);
    return i;
  }

  function table(lines, i, out) {
    const cells = (l) => l.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
    const head = el("tr", {}, cells(lines[i]).map((c) => el("th", {}, inline(c))));
    i += 2;
    const rows = [];
    while (i < lines.length && !blank(lines[i]) && lines[i].includes("|")) {
      rows.push(el("tr", {}, cells(lines[i]).map((c) => el("td", {}, inline(c)))));
      i++;
    }
    out.push(el("div", { class: "scroll" }, [el("table", { class: "md-table" }, [el("thead", {}, [head]), el("tbody", {}, rows)])]));
    return i;
  }

  const PUNCT = /[!-/:-@[-`{-~]/;
  const WORD = /[\p{L}\p{N}]/u;
  const safeUrl = (u) => /^https?:\/\/[^\s]+$/i.test(u);

  function link(label, href) {
    return el("a", { href, rel: "noopener noreferrer", target: "_blank" }, label);
  }

  // How far a link label or an emphasis may reach: each opener scans at most this far, so
  // a long paragraph full of unmatched `*` or `[` (a pasted log) renders in linear time.
  const REACH = 2000;

  // The index of `]` closing the `[` at `start`, with nested brackets; -1 if none.
  function closingBracket(s, start) {
    let depth = 0;
    for (let k = start; k < Math.min(s.length, start + REACH); k++) {
      if (s[k] === "\\") { k++; continue; }
      if (s[k] === "`") { const end = s.indexOf("`", k + 1); if (end > 0) k = end; continue; }
      if (s[k] === "[") depth++;
      else if (s[k] === "]" && --depth === 0) return k;
    }
    return -1;
  }

  function inline(s) {
    const out = [];
    // Openers known to have no closer further on (the search reached the end of `s`).
    const dead = new Set();
    let buf = "";
    const flush = () => {
      if (!buf) return;
      const parts = buf.split("\n");
      parts.forEach((p, k) => { if (k) out.push(el("br")); if (p) out.push(text(p)); });
      buf = "";
    };
    let i = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === "\\" && i + 1 < s.length && PUNCT.test(s[i + 1])) { buf += s[i + 1]; i += 2; continue; }
      if (c === "`") {
        const run = s.slice(i).match(/^`+/)[0];
        const end = dead.has(run) ? -1 : s.indexOf(run, i + run.length);
        if (end < 0) dead.add(run);
        // The closing run must be exactly as long as the opening one.
        if (end > 0 && s[end + run.length] !== "`") {
          let code = s.slice(i + run.length, end).replace(/\n/g, " ");
          if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
          flush(); out.push(el("code", {}, [text(code)]));
          i = end + run.length;
          continue;
        }
        buf += run; i += run.length; continue;
      }
      if (c === "[" || (c === "!" && s[i + 1] === "[")) {
        const open = c === "!" ? i + 1 : i;
        const close = closingBracket(s, open);
        const target = close > 0 ? s.slice(close + 1).match(/^\(\s*<?([^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)>?(?:\s+("[^"]*"|'[^']*'))?\s*\)/) : null;
        if (target) {
          const label = s.slice(open + 1, close);
          const end = close + 1 + target[0].length;
          flush();
          // Only http(s) targets become links; anything else (javascript:, data:, …)
          // stays as the text it was written as. Images are not loaded: a link to them.
          if (safeUrl(target[1])) out.push(link(c === "!" ? [text(label || target[1])] : inline(label), target[1]));
          else out.push(text(s.slice(i, end)));
          i = end;
          continue;
        }
      }
      if (c === "<") {
        const m = s.slice(i).match(/^<(https?:\/\/[^\s<>]+)>/i);
        if (m) { flush(); out.push(link([text(m[1])], m[1])); i += m[0].length; continue; }
      }
      if ((c === "h" || c === "H") && (i === 0 || !WORD.test(s[i - 1]))) {
        const m = s.slice(i).match(/^https?:\/\/[^\s<>]*[^\s<>.,:;"'!?)\]*_~]/i);
        if (m) { flush(); out.push(link([text(m[0])], m[0])); i += m[0].length; continue; }
      }
      if (c === "*" || c === "_" || c === "~") {
        const span = emphasis(s, i, dead);
        if (span) { flush(); out.push(span.node); i = span.end; continue; }
        const run = s.slice(i).match(c === "*" ? /^\*+/ : c === "_" ? /^_+/ : /^~+/)[0];
        buf += run; i += run.length; continue;
      }
      buf += c; i++;
    }
    flush();
    return out;
  }

  // `**strong**`, `*em*`, `__strong__`, `_em_`, `~~del~~` starting at s[i], or null. An
  // underscore inside a word (snake_case) is no emphasis.
  function emphasis(s, i, dead) {
    const c = s[i];
    if (c === "_" && i > 0 && WORD.test(s[i - 1])) return null;
    const run = s.slice(i).match(c === "*" ? /^\*+/ : c === "_" ? /^_+/ : /^~+/)[0];
    const width = c === "~" ? (run.length === 2 ? 2 : 0) : Math.min(run.length, 2);
    if (!width) return null;
    const mark = c.repeat(width);
    const start = i + width;
    if (start >= s.length || /\s/.test(s[start]) || dead.has(mark)) return null;
    const last = Math.min(s.length - width, start + REACH);
    for (let k = start + 1; k <= last; k++) {
      if (s[k] === "\\") { k++; continue; }
      if (s[k] === "`") { const end = s.indexOf("`", k + 1); if (end > 0) { k = end; continue; } }
      if (s.slice(k, k + width) !== mark || /\s/.test(s[k - 1])) continue;
      // The closer is not part of a longer run (`*a**` closes nothing at `**`).
      if (s[k + width] === c && width === 1) { k++; continue; }
      if (c === "_" && k + width < s.length && WORD.test(s[k + width])) continue;
      const tag = c === "~" ? "del" : width === 2 ? "strong" : "em";
      return { node: el(tag, {}, inline(s.slice(start, k))), end: k + width };
    }
    if (last === s.length - width) dead.add(mark);
    return null;
  }

  // The statement as a <div class="markdown"> of DOM nodes.
  function render(source, id) {
    const lines = String(source || "").replace(/\r\n?/g, "\n").split("\n")
      .map((l) => l.replace(/^\t+/, (t) => "    ".repeat(t.length)));
    const root = el("div", id ? { class: "markdown", id } : { class: "markdown" }, blocks(lines));
    return root;
  }

  return { render };
})();
