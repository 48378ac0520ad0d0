// Parse PromQL expressions with Prometheus's own grammar (@prometheus-io/lezer-promql, the
// parser behind the Prometheus web UI) and report, for each, the metric names it selects
// and any syntax errors. Used by the dashboards' tests: stdin is a JSON array of
// expressions, stdout a JSON array of {"metrics": [...], "errors": [...]} in the same order.
// Grafana macros ($__rate_interval, ...) must be replaced by the caller first.
import { readFileSync } from "node:fs";
import { parser } from "@prometheus-io/lezer-promql";

function inspect(expr) {
  const tree = parser.parse(expr);
  const metrics = new Set();
  const errors = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push(`syntax error at ${node.from}: ${JSON.stringify(expr.slice(node.from, node.from + 20))}`);
      }
      if (node.name === "VectorSelector") {
        const name = node.node.getChild("Identifier");
        if (name === null) {
          errors.push(`selector without a metric name at ${node.from}`);
        } else {
          metrics.add(expr.slice(name.from, name.to));
        }
      }
    },
  });
  return { metrics: [...metrics].sort(), errors };
}

const exprs = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(exprs.map(inspect)));
