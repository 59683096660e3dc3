// The report as one self-contained HTML file: the data, Chart.js (bundled from the npm
// package, no network) and three charts — actions over time by outcome, each journey's step
// funnel, and the event-to-send latency distribution — beside the same tables as the text.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Measures } from "./measures";
import { formatTable } from "./table";

const require = createRequire(import.meta.url);
// The package exports no path to its UMD build, so it is found beside the resolved entry.
const CHART_JS = () =>
  readFileSync(join(dirname(require.resolve("chart.js")), "chart.umd.min.js"), "utf8");

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function formatHtml(m: Measures): string {
  // `</script>` inside the data would end the script element early.
  const data = JSON.stringify(m).replace(/</g, "\\u003c");
  const dup = m.duplicateSends.length;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>sendonce report since ${escape(m.since)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d1d1f}
.kpis{display:flex;gap:1rem;flex-wrap:wrap}.kpi{border:1px solid #ddd;border-radius:8px;padding:.8rem 1.2rem;min-width:10rem}
.kpi b{display:block;font-size:1.6rem}.bad b{color:#b00020}.good b{color:#1b7f3b}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(30rem,1fr));gap:2rem;margin:2rem 0}
canvas{max-height:22rem}pre{background:#f6f6f6;padding:1rem;overflow:auto;font-size:.85rem}
</style></head><body>
<h1>sendonce report</h1>
<p>Since ${escape(m.since)}${m.journeyId ? `, journey <code>${escape(m.journeyId)}</code>` : ""}.</p>
<div class="kpis">
<div class="kpi ${dup === 0 ? "good" : "bad"}" id="kpi-duplicate-sends"><b>${dup}</b>duplicate sends</div>
<div class="kpi"><b>${m.events.reduce((s, e) => s + e.duplicates, 0)}</b>duplicate events dropped</div>
<div class="kpi"><b>${m.suppressedDuplicates.reduce((s, e) => s + e.count, 0)}</b>duplicate actions suppressed</div>
<div class="kpi"><b>${m.inDoubt}</b>in doubt</div>
<div class="kpi"><b>${m.retries.successRate === null ? "-" : `${Math.round(m.retries.successRate * 100)} %`}</b>retry success</div>
</div>
<div class="charts">
<figure><figcaption>Actions over time by outcome</figcaption><canvas id="chart-timeline"></canvas></figure>
<figure><figcaption>Step funnel per journey</figcaption><canvas id="chart-funnel"></canvas></figure>
<figure><figcaption>Event-to-send latency</figcaption><canvas id="chart-latency"></canvas></figure>
</div>
<h2>All measures</h2>
<pre>${escape(formatTable(m))}</pre>
<script>${CHART_JS()}</script>
<script>
const m = ${data};
const colors = { sent: "#1b7f3b", skipped: "#9e9e9e", failed_permanent: "#b00020", failed_retryable: "#f0a500", in_doubt: "#6a1b9a", claimed: "#1565c0", calling: "#00838f" };
const hours = [...new Set(m.timeline.map((t) => t.hour))];
const states = [...new Set(m.timeline.map((t) => t.state))];
window.sendonceCharts = [
  new Chart(document.getElementById("chart-timeline"), {
    type: "bar",
    data: { labels: hours.map((h) => h.slice(0, 13).replace("T", " ") + ":00"),
      datasets: states.map((s) => ({ label: s, backgroundColor: colors[s] ?? "#777",
        data: hours.map((h) => m.timeline.find((t) => t.hour === h && t.state === s)?.count ?? 0) })) },
    options: { animation: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  }),
  new Chart(document.getElementById("chart-funnel"), {
    type: "bar",
    data: { labels: m.funnel.flatMap((j) => [j.journeyId + ": enrolled", ...j.steps.map((s) => j.journeyId + "." + s.stepId)]),
      datasets: ["enrolled", "sent", "skipped", "other"].map((k) => ({ label: k,
        backgroundColor: { enrolled: "#1565c0", sent: colors.sent, skipped: colors.skipped, other: "#f0a500" }[k],
        data: m.funnel.flatMap((j) => [k === "enrolled" ? j.enrolled : 0, ...j.steps.map((s) => (k === "enrolled" ? 0 : s[k]))]) })) },
    options: { animation: false, indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true }, y: { stacked: true } } },
  }),
  new Chart(document.getElementById("chart-latency"), {
    type: "bar",
    data: { labels: m.latencyHistogram.map((b, i) => b.upToMs === null ? "more" : "< " + (b.upToMs < 1000 ? b.upToMs + " ms" : b.upToMs / 1000 + " s")),
      datasets: [{ label: "sends", backgroundColor: "#1565c0", data: m.latencyHistogram.map((b) => b.count) }] },
    options: { animation: false, scales: { y: { beginAtZero: true } } },
  }),
];
</script>
</body></html>
`;
}
