/**
 * A hand-written SVG grouped bar chart for the peer bench (no dependency):
 * one group per link profile, one bar per peer, log-scaled throughput axis, a
 * dashed line for the emulator's ceiling.
 * @module
 */

/** One bar: a peer's median throughput under one profile (null = not run). */
export interface ChartBar {
  peer: string;
  mbps: number | null;
  /** True when the runs hit the time cap (drawn hatched). */
  capped?: boolean;
}

/** One group of bars. */
export interface ChartGroup {
  label: string;
  bars: ChartBar[];
}

const COLORS = ["#8c8c8c", "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

function fmt(v: number): string {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** Renders the chart as an SVG document. */
export function groupedBarSvg(
  title: string,
  groups: ChartGroup[],
  peers: string[],
  ceilingMbps: number | null,
): string {
  const W = 960;
  const H = 460;
  const left = 70;
  const right = 20;
  const top = 70;
  const bottom = 60;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const values = groups.flatMap((g) => g.bars.map((b) => b.mbps)).filter((v): v is number =>
    v !== null && v > 0
  );
  if (ceilingMbps) values.push(ceilingMbps);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values, 1))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values, 10))));
  const y = (v: number) =>
    top + plotH - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) /
      (Math.log10(hi) - Math.log10(lo)) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(
    `<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-width="2"/></pattern></defs>`,
  );
  out.push(
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${
      esc(title)
    }</text>`,
  );
  // Legend.
  let lx = left;
  peers.forEach((p, i) => {
    out.push(
      `<rect x="${lx}" y="36" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
    );
    out.push(`<text x="${lx + 16}" y="46">${esc(p)}</text>`);
    lx += 24 + p.length * 7;
  });
  // Axis, decades and grid.
  for (let v = lo; v <= hi * 1.0001; v *= 10) {
    const yy = y(v).toFixed(1);
    out.push(
      `<line x1="${left}" y1="${yy}" x2="${W - right}" y2="${yy}" stroke="#dddddd"/>`,
    );
    out.push(
      `<text x="${left - 6}" y="${Number(yy) + 4}" text-anchor="end">${
        v >= 1 ? Math.round(v) : Number(v.toPrecision(1))
      }</text>`,
    );
  }
  out.push(
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#333333"/>`,
  );
  out.push(
    `<line x1="${left}" y1="${top + plotH}" x2="${W - right}" y2="${
      top + plotH
    }" stroke="#333333"/>`,
  );
  out.push(
    `<text transform="translate(18 ${
      top + plotH / 2
    }) rotate(-90)" text-anchor="middle">Mbit/s (log scale, median)</text>`,
  );
  // Bars.
  const groupW = plotW / Math.max(groups.length, 1);
  const barW = Math.min(34, (groupW - 20) / Math.max(peers.length, 1));
  groups.forEach((g, gi) => {
    const gx = left + gi * groupW + (groupW - barW * peers.length) / 2;
    peers.forEach((p, pi) => {
      const bar = g.bars.find((b) => b.peer === p);
      const x = gx + pi * barW;
      const cx = (x + barW / 2).toFixed(1);
      if (!bar || bar.mbps === null) {
        out.push(
          `<text x="${cx}" y="${top + plotH - 4}" text-anchor="middle" fill="#999999">–</text>`,
        );
        return;
      }
      const yy = y(bar.mbps);
      const h = top + plotH - yy;
      const color = COLORS[pi % COLORS.length];
      out.push(
        `<rect x="${(x + 1).toFixed(1)}" y="${yy.toFixed(1)}" width="${
          (barW - 2).toFixed(1)
        }" height="${h.toFixed(1)}" fill="${color}"><title>${esc(p)}, ${esc(g.label)}: ${
          fmt(bar.mbps)
        } Mbit/s${bar.capped ? " (time cap hit)" : ""}</title></rect>`,
      );
      if (bar.capped) {
        out.push(
          `<rect x="${(x + 1).toFixed(1)}" y="${yy.toFixed(1)}" width="${
            (barW - 2).toFixed(1)
          }" height="${h.toFixed(1)}" fill="url(#hatch)"/>`,
        );
      }
      out.push(
        `<text x="${cx}" y="${(yy - 4).toFixed(1)}" text-anchor="middle" font-size="10">${
          fmt(bar.mbps)
        }</text>`,
      );
    });
    out.push(
      `<text x="${(left + gi * groupW + groupW / 2).toFixed(1)}" y="${
        top + plotH + 20
      }" text-anchor="middle">${esc(g.label)}</text>`,
    );
  });
  if (ceilingMbps) {
    const yy = y(ceilingMbps).toFixed(1);
    out.push(
      `<line x1="${left}" y1="${yy}" x2="${
        W - right
      }" y2="${yy}" stroke="#000000" stroke-dasharray="6 4"/>`,
    );
    out.push(
      `<text x="${W - right - 4}" y="${Number(yy) - 4}" text-anchor="end" font-size="11">` +
        `emulator ceiling (plain TCP, clean): ${fmt(ceilingMbps)} Mbit/s</text>`,
    );
  }
  out.push(
    `<text x="${left}" y="${
      H - 12
    }" font-size="11" fill="#555555">Hatched bars: every run hit the time cap; the figure is what was achieved.</text>`,
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
}
