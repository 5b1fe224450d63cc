// Simple charts as inline SVG (no library): horizontal bars with their values written beside them. The
// numbers are also in a table next to each chart, so the chart is a picture of the table, not its only form.
import { number } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f4e79", "#2e6b30", "#7a3b00", "#5b2a86", "#8a1538", "#00585c", "#4a4a4a"];

function node(tag, attributes = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

let counter = 0;

/** `bars`: [{label, value}] (value null: unknown, drawn as "—"). */
export function barChart(title, bars) {
  counter += 1;
  const id = `chart-${counter}`;
  const labelWidth = 170;
  const barArea = 300;
  const row = 26;
  const height = bars.length * row + 10;
  const width = labelWidth + barArea + 130;
  const top = Math.max(1, ...bars.map((b) => (typeof b.value === "number" ? b.value : 0)));
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
                            "aria-labelledby": `${id}-title`, class: "chart", focusable: "false" });
  svg.append(node("title", { id: `${id}-title` }, title));
  bars.forEach((bar, i) => {
    const y = 5 + i * row;
    svg.append(node("text", { x: labelWidth - 8, y: y + 16, "text-anchor": "end", class: "chart-label" }, bar.label));
    const known = typeof bar.value === "number";
    const length = known ? Math.max(known && bar.value > 0 ? 2 : 0, (bar.value / top) * barArea) : 0;
    svg.append(node("rect", { x: labelWidth, y: y + 3, width: length, height: row - 8,
                              fill: COLOURS[i % COLOURS.length] }));
    svg.append(node("text", { x: labelWidth + length + 6, y: y + 16, class: "chart-value" },
                    known ? number(bar.value) : "—"));
  });
  return svg;
}
