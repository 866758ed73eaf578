// Small SVG charts drawn by the console.

import { s } from './dom.js';

/**
 * Readings of one metric over time with the criterion's threshold as a dashed line.
 * points: [{t: ms, v: number}], oldest first.
 */
export function sparkline(points, threshold, label) {
  const W = 280;
  const H = 80;
  const P = 6;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label });
  svg.append(s('title', { text: label }));
  const values = points.map((p) => p.v).concat([threshold]);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi === lo) { hi += 1; lo -= 1; }
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  const t0 = points.length ? points[0].t : 0;
  const t1 = points.length ? points[points.length - 1].t : 1;
  const x = (t, i) => (t1 > t0 ? P + ((t - t0) / (t1 - t0)) * (W - 2 * P) : P + (i / Math.max(1, points.length - 1)) * (W - 2 * P));
  svg.append(s('line', { class: 'axis', x1: P, y1: H - P, x2: W - P, y2: H - P }));
  svg.append(s('line', { class: 'threshold', x1: P, y1: y(threshold), x2: W - P, y2: y(threshold) }));
  svg.append(s('text', { x: W - P, y: Math.max(10, y(threshold) - 3), 'text-anchor': 'end', text: `threshold ${threshold}` }));
  if (points.length) {
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t, i).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    svg.append(s('path', { class: 'line', d }));
    points.forEach((p, i) => svg.append(s('circle', { class: 'dot', cx: x(p.t, i), cy: y(p.v), r: 2.5 })));
  } else {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'no readings yet' }));
  }
  return svg;
}
