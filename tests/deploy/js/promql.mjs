// Parse PromQL with Prometheus' own grammar (npm @prometheus-io/lezer-promql,
// the parser of the Prometheus UI) and report what each expression reads.
// stdin: a JSON array of expressions; stdout: a JSON array of
// {error, selectors: [{name, labels: [..]}], grouping: [..]} where error is
// the text around the first syntax error (null when the expression parses).
import { readFileSync } from "node:fs";
import { parser } from "@prometheus-io/lezer-promql";

function unquote(s) {
  try {
    return JSON.parse(s.startsWith("'") ? '"' + s.slice(1, -1).replace(/"/g, '\\"') + '"' : s);
  } catch {
    return s.slice(1, -1);
  }
}

function analyse(expr) {
  const tree = parser.parse(expr);
  const text = (n) => expr.slice(n.from, n.to);
  let error = null;
  const selectors = [];
  const grouping = [];
  tree.iterate({
    enter(ref) {
      if (ref.type.isError && error === null) {
        error = `syntax error at ${ref.from}: ...${expr.slice(Math.max(0, ref.from - 20), ref.from + 20)}...`;
      }
      if (ref.name === "GroupingLabels") {
        const n = ref.node;
        for (let c = n.firstChild; c; c = c.nextSibling) {
          if (c.name === "LabelName") grouping.push(text(c));
          if (c.name === "QuotedLabelName") grouping.push(unquote(text(c)));
        }
      }
      if (ref.name === "VectorSelector") {
        const n = ref.node;
        let name = null;
        const labels = [];
        const id = n.getChild("Identifier");
        if (id) name = text(id);
        const matchers = n.getChild("LabelMatchers");
        if (matchers) {
          for (let m = matchers.firstChild; m; m = m.nextSibling) {
            if (m.name === "UnquotedLabelMatcher" || m.name === "QuotedLabelMatcher") {
              const ln = m.getChild("LabelName") || m.getChild("QuotedLabelName");
              const op = m.getChild("MatchOp");
              const val = m.getChild("StringLiteral");
              const label = ln.name === "QuotedLabelName" ? unquote(text(ln)) : text(ln);
              if (label === "__name__") {
                if (op && text(op) === "=" && val) name = unquote(text(val));
                else name = name ?? `<regex __name__ ${val ? text(val) : ""}>`;
              } else {
                labels.push(label);
              }
            } else if (m.name === "QuotedLabelName") {
              name = unquote(text(m)); // {"metric.name"}
            }
          }
        }
        selectors.push({ name, labels });
      }
    },
  });
  return { error, selectors, grouping };
}

const exprs = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(exprs.map(analyse)));
