// Post-mortem: an SVG timeline of one rollout, a slider replaying its state at any event
// (GET /v1/rollouts/{id}?as_of=POSITION), annotations and the Markdown report.

import { h, s, badge, message, fmtTime, stageLabel, saveBlob } from '../dom.js';
import * as api from '../api.js';
import { explain } from '../rules.js';

const BAND_COLOURS = ['#0969da', '#1a7f37', '#8250df', '#bf3989', '#9a6700', '#0a3069'];

function markerKind(item) {
  if (item.kind === 'breach' || item.event_type === 'GuardrailBreached') return ['breach', 'guardrail breach'];
  if (item.kind === 'annotation' || item.event_type === 'Annotated') return ['annotation', 'annotation'];
  if (item.event_type === 'AdvanceApproved') return ['approval', 'approval'];
  if (item.event_type === 'RolledBack') return ['rollback', 'rollback'];
  if (item.event_type === 'NoteAdded') return ['note', 'note'];
  return ['event', 'other event'];
}

function drawTimeline(steps, timeline, plan) {
  const W = 1000;
  const H = 240;
  const L = 40;
  const R = 12;
  const top = 24;
  const plotH = 130;
  const n = steps.length;
  const x = (i) => L + (n > 1 ? (i / (n - 1)) * (W - L - R) : (W - L - R) / 2);
  const y = (pct) => top + plotH - (pct / 100) * plotH;
  const svg = s('svg', { class: 'timeline', id: 'timeline-chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Timeline: stages as bands, exposure as a step line, decisions and breaches as markers' });
  svg.append(s('title', { text: 'Rollout timeline' }));

  // Stages as bands: runs of consecutive events at one stage.
  let start = 0;
  for (let i = 1; i <= n; i += 1) {
    const stage = steps[start].state ? steps[start].state.stage_index : null;
    const here = i < n && steps[i].state ? steps[i].state.stage_index : undefined;
    if (i < n && here === stage) continue;
    if (stage !== null && stage !== undefined) {
      const x0 = start === 0 ? x(0) : (x(start - 1) + x(start)) / 2;
      const x1 = i >= n ? x(n - 1) : (x(i - 1) + x(i)) / 2;
      const colour = BAND_COLOURS[stage % BAND_COLOURS.length];
      const name = plan && plan.stages[stage] ? plan.stages[stage].name : `stage ${stage}`;
      svg.append(s('rect', { class: 'band', x: x0, y: top, width: Math.max(2, x1 - x0), height: plotH, fill: colour },
        s('title', { text: `stage ${stage} · ${name}` })));
      if (x1 - x0 > 60) svg.append(s('text', { class: 'band-label', x: x0 + 4, y: top + 12, text: `${stage} · ${name}` }));
    }
    start = i;
  }
  // Axes and the exposure step line.
  svg.append(s('line', { class: 'axis', x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: '#d0d7de' }));
  for (const p of [0, 50, 100]) svg.append(s('text', { x: L - 4, y: y(p) + 4, 'text-anchor': 'end', text: `${p}%` }));
  let d = '';
  steps.forEach((st, i) => {
    const e = st.state ? st.state.exposure : 0;
    d += i === 0 ? `M${x(i)},${y(e)}` : ` H${x(i)} V${y(e)}`;
  });
  svg.append(s('path', { class: 'exposure', d }, s('title', { text: 'exposure (%)' })));

  // Markers.
  const index = new Map(steps.map((st, i) => [st.position, i]));
  const my = top + plotH + 28;
  for (const item of timeline) {
    const i = index.get(item.position);
    if (i === undefined) continue;
    const [kind, words] = markerKind(item);
    if (kind === 'event') continue;
    const shape = kind === 'breach' || kind === 'rollback'
      ? s('rect', { class: `marker m-${kind}`, x: x(i) - 5, y: my - 5, width: 10, height: 10, transform: `rotate(45 ${x(i)} ${my})` })
      : s('circle', { class: `marker m-${kind}`, cx: x(i), cy: my, r: 5 });
    shape.append(s('title', { text: `${words} at position ${item.position}: ${item.summary}` }));
    svg.append(shape);
  }
  const first = steps[0];
  const last = steps[n - 1];
  if (first) svg.append(s('text', { x: L, y: H - 6, text: fmtTime(first.at) }));
  if (last) svg.append(s('text', { x: W - R, y: H - 6, 'text-anchor': 'end', text: fmtTime(last.at) }));
  const cursor = s('line', { class: 'cursor', x1: x(n - 1), y1: top - 6, x2: x(n - 1), y2: my + 10 });
  svg.append(cursor);
  return { svg, moveCursor: (i) => { cursor.setAttribute('x1', x(i)); cursor.setAttribute('x2', x(i)); } };
}

function legend() {
  const item = (cls, words, diamond) => h('li', {},
    s('svg', { width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true' },
      diamond ? s('rect', { class: cls, x: 2, y: 2, width: 8, height: 8, transform: 'rotate(45 6 6)' }) : s('circle', { class: cls, cx: 6, cy: 6, r: 5 })),
    words);
  const l = h('ul', { class: 'legend timeline-legend', 'aria-label': 'Legend' },
    item('m-approval', 'approval'), item('m-breach', 'guardrail breach', true), item('m-rollback', 'rollback', true),
    item('m-note', 'note'), item('m-annotation', 'annotation'), h('li', {}, 'blue line: exposure %, shaded bands: stages'));
  return l;
}

export async function postmortemPage(id) {
  const rid = encodeURIComponent(id);
  const [view, replayItems, timeline] = await Promise.all([
    api.get(`/v1/rollouts/${rid}`),
    api.all(`/v1/rollouts/${rid}/replay`, {}, 5),
    api.all(`/v1/rollouts/${rid}/timeline`, {}, 5),
  ]);
  const steps = replayItems;
  const { svg, moveCursor } = drawTimeline(steps, timeline, view.plan);

  const state = h('div', { id: 'replay-state', class: 'card', 'aria-live': 'polite' });
  const slider = h('input', { type: 'range', id: 'replay-slider', min: 0, max: Math.max(0, steps.length - 1), step: 1, value: Math.max(0, steps.length - 1) });
  let seq = 0;
  async function show(i) {
    moveCursor(i);
    const step = steps[i];
    if (!step) return;
    const mine = ++seq;
    slider.setAttribute('aria-valuetext', `event ${i + 1} of ${steps.length}: ${step.event_type}`);
    try {
      const at = await api.get(`/v1/rollouts/${rid}`, { as_of: String(step.position) });
      if (mine !== seq) return;
      state.replaceChildren(
        h('h3', {}, `At position ${step.position} (${fmtTime(step.at)}): ${step.event_type}`),
        h('p', {}, step.summary),
        h('dl', { class: 'meta' },
          h('div', {}, h('dt', {}, 'Status'), h('dd', {}, badge(at.status))),
          h('div', {}, h('dt', {}, 'Stage'), h('dd', { id: 'replay-stage' }, stageLabel(at.plan, at.stage))),
          h('div', {}, h('dt', {}, 'Exposure'), h('dd', { id: 'replay-exposure' }, `${at.exposure_percentage} %`)),
          h('div', {}, h('dt', {}, 'Open request'), h('dd', {}, at.open_request ? 'yes' : 'none'))));
      state.dataset.position = String(step.position);
    } catch (e) {
      if (mine === seq) state.replaceChildren(message('error', explain(e)));
    }
  }
  let timer = null;
  slider.addEventListener('input', () => {
    const i = Number(slider.value);
    moveCursor(i);
    clearTimeout(timer);
    timer = setTimeout(() => show(i), 120);
  });
  await show(steps.length - 1);

  const list = h('ol', { class: 'timeline-list' }, timeline.map((t) => {
    const [kind, words] = markerKind(t);
    return h('li', { 'data-kind': kind },
      h('span', { class: 'hint' }, `T${t.offset_seconds >= 0 ? '+' : '−'}${Math.abs(t.offset_seconds)} s · `),
      kind === 'event' ? '' : badge(kind === 'breach' || kind === 'rollback' ? 'bad' : 'ok', words), ' ',
      `${t.event_type} by ${t.actor.id || 'system'}: `, t.summary,
      t.annotation ? h('div', { class: 'hint' }, `“${t.annotation.text}”${t.annotation.about ? ` (about ${t.annotation.about})` : ''}`) : null);
  }));

  const out = h('div', { 'aria-live': 'polite' });
  const annText = h('textarea', { id: 'annotation-text', required: true });
  const annAbout = h('input', { id: 'annotation-about', placeholder: 'e.g. position 42' });
  const annForm = h('form', { class: 'card', id: 'annotation-form' },
    h('h2', {}, 'Add an annotation'),
    h('label', { for: 'annotation-text' }, 'Annotation'), annText,
    h('label', { for: 'annotation-about' }, 'About (optional; defaults to the slider position)'), annAbout,
    h('button', { type: 'submit' }, 'Add annotation'));
  annForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!annText.value.trim()) {
      out.replaceChildren(message('error', 'Write the annotation first.'));
      return;
    }
    const step = steps[Number(slider.value)];
    try {
      await api.post(`/v1/rollouts/${rid}/timeline/annotations`, { text: annText.value.trim(), about: annAbout.value.trim() || (step ? `position ${step.position}` : null) });
      out.replaceChildren(message('ok', 'Annotation added.'));
      setTimeout(() => window.dispatchEvent(new CustomEvent('rollgate:navigate')), 500);
    } catch (e) {
      out.replaceChildren(message('error', explain(e)));
    }
  });

  const md = h('pre', { id: 'postmortem-markdown', hidden: true });
  const exportBtn = h('button', { type: 'button', class: 'secondary', id: 'export-markdown' }, 'Export Markdown');
  exportBtn.addEventListener('click', async () => {
    try {
      const data = await api.blob(`/v1/rollouts/${rid}/postmortem`, 'text/markdown');
      md.textContent = await data.text();
      md.hidden = false;
      saveBlob(data, `postmortem-${view.feature_key}.md`);
    } catch (e) {
      out.replaceChildren(message('error', explain(e)));
    }
  });

  const node = h('section', { class: 'postmortem' },
    h('h1', {}, 'Post-mortem: ', h('span', { id: 'pm-title' }, view.title)),
    h('p', {}, h('a', { href: `#/rollouts/${view.id}` }, 'Back to the rollout'), ' · now ', badge(view.status), ' at ', stageLabel(view.plan, view.stage)),
    h('div', { class: 'timeline-wrap' }, svg), legend(),
    h('label', { for: 'replay-slider' }, 'Replay the rollout at an event'), slider,
    state,
    h('div', { class: 'row' }, exportBtn),
    out,
    annForm,
    md,
    h('h2', {}, 'Events'), list);
  return { node, title: `Post-mortem: ${view.title}` };
}
