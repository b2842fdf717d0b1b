// A small SQL tokenizer for the rule editor's highlighting: keywords, functions, strings,
// numbers, comments, operators. It only colours text; the engine's parser decides validity.

const KEYWORDS = new Set(
  `select from where and or not in is null like ilike similar between case when then else end as on join left right
inner outer full cross group by order having limit offset distinct union all exists true false asc desc with over
partition window interval cast try_cast`.split(/\s+/),
);

/** Splits `text` into `[kind, text]` tokens that concatenate back to `text`. */
export function tokenize(text) {
  const out = [];
  const re =
    /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(\s+)|([^\sA-Za-z0-9_'"])/gy;
  let m;
  let pos = 0;
  while (pos < text.length && (m = re.exec(text))) {
    pos = re.lastIndex;
    const [all, comment, str, quoted, num, word, space] = m;
    let kind = "op";
    if (comment) kind = "comment";
    else if (str) kind = "string";
    else if (quoted) kind = "ident";
    else if (num) kind = "number";
    else if (space) kind = "space";
    else if (word) {
      const rest = text.slice(re.lastIndex);
      kind = KEYWORDS.has(word.toLowerCase()) ? "keyword" : /^\s*\(/.test(rest) ? "func" : "ident";
    }
    out.push([kind, all]);
  }
  if (pos < text.length) out.push(["op", text.slice(pos)]);
  return out;
}
