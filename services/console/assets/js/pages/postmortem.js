// Post-mortem: an SVG timeline of one rollout, a slider replaying its state at any event
// (GET /v1/rollouts/{id}?as_of=POSITION), annotations and the Markdown report.

import { h, s, badge, message, fmtTime, stageLabel, saveBlob } from '../dom.js';
import * as api from '../api.js';
import { explain } from '../rules.js';

const BAND_COLOURS = ['#0969da', '#1a7f37', '#8250df', '#bf3989', '#9a6700', '#0a3069'];

/** [kind, words] of a timeline entry's marker on the events lane. */
function markerKind(item) {
  if (item.kind === 'breach' || item.event_type === 'GuardrailBreached') return ['breach', 'guardrail breach'];
  if (item.kind === 'verdict') return ['verdict', 'guardrail verdict'];
  if (item.kind === 'annotation' || item.event_type === 'Annotated') return ['annotation', 'annotation'];
  if (item.event_type === 'AdvanceApproved') return ['approval', 'approval'];
  if (item.event_type === 'AdvanceRejected') return ['rejection', 'rejection'];
  if (item.event_type === 'DecisionRecorded') return ['decision', 'recorded decision'];
  if (item.event_type === 'RolledBack') return ['rollback', 'rollback'];
  if (item.event_type === 'NoteAdded') return ['note', 'note'];
  return ['event', 'other event'];
}

// A verdict entry's summary is one clause per criterion whose verdict changed (see the
// timeline projection): "rollback criterion <criterion>: <was> -> <now>; query `...`".
const CLAUSE = /(success|rollback) criterion .*?: (pass|fail|inconclusive) -> (pass|fail|inconclusive)(?=; query `|$)/g;
const OUTCOME_RANK = { pass: 0, inconclusive: 1, fail: 2, breach: 3 };
/** The words each guardrail outcome is shown with (never colour alone). */
export const OUTCOME_WORDS = { breach: 'breach', fail: 'not met', inconclusive: 'inconclusive', pass: 'pass' };

/**
 * The outcome of a guardrail timeline entry: `breach` (a rollback criterion breached),
 * `fail` (a success criterion not met), `inconclusive` or `pass`; the worst of its clauses.
 * Null for entries that are not about guardrails.
 */
export function guardrailOutcome(item) {
  if (item.kind === 'breach' || item.event_type === 'GuardrailBreached') return 'breach';
  if (item.kind !== 'verdict') return null;
  let worst = null;
  for (const [, kind, , now] of String(item.summary).matchAll(CLAUSE)) {
    const outcome = now === 'fail' ? (kind === 'rollback' ? 'breach' : 'fail') : now;
    if (worst === null || OUTCOME_RANK[outcome] > OUTCOME_RANK[worst]) worst = outcome;
  }
  return worst || 'inconclusive';
}

/** The gate's verdict on a recorded answer: allow, wait or deny. */
function gateVerdict(answer) {
  const v = answer.event && answer.event.verdict;
  return ['allow', 'wait', 'deny'].includes(v) ? v : 'wait';
}

const GATE_WORDS = { allow: 'gate: allow', wait: 'gate: wait', deny: 'gate: deny' };

/** When a gate answer was given (its decision time, as the timeline's entries). */
function gateAt(answer) {
  return (answer.event && answer.event.at) || answer.recorded_at;
}

/**
 * The gate answers recorded for this rollout by the tools bound to it (Flagger, Argo
 * Rollouts, GitHub, flagd), oldest first, heartbeats left out (they repeat the last answer).
 * Bindings name their rollout in their audit line; their answers are read per binding.
 */
async function gateAnswers(view) {
  const bound = await api.all('/v1/audit', { event_type: 'BindingCreated', team: view.team }, 5);
  const mine = bound.filter((r) => String(r.summary).endsWith(` to rollout ${view.id}`) && String(r.stream).startsWith('binding-'));
  const pages = await Promise.all(mine.map((r) =>
    api.get(`/v1/bindings/${encodeURIComponent(r.stream.slice('binding-'.length))}/answers`)));
  return pages.flatMap((p) => p.items)
    .filter((a) => !(a.event && a.event.heartbeat))
    .sort((a, b) => a.position - b.position);
}

/** `T+1:06:40`, as the server's report writes offsets. */
function offsetText(seconds) {
  const a = Math.abs(Math.round(seconds));
  const pad = (n) => String(n).padStart(2, '0');
  return `T${seconds < 0 ? '-' : '+'}${Math.floor(a / 3600)}:${pad(Math.floor((a % 3600) / 60))}:${pad(a % 60)}`;
}

/** Text made safe for one Markdown line: no line breaks, markup characters escaped. */
function mdText(t) {
  return String(t).replace(/[\r\n]+/g, ' ').replace(/[\\`*_[\]<>|#]/g, (c) => `\\${c}`);
}

/**
 * The console's addition to the post-mortem report: the guardrail outcomes and gate answers
 * drawn on the timeline, in words, with their offsets from the rollout's start.
 */
export function markdownSection(timeline, gates) {
  const first = timeline[0];
  const origin = first ? Date.parse(first.at) - first.offset_seconds * 1000 : null;
  const lines = [];
  for (const t of timeline) {
    const outcome = guardrailOutcome(t);
    if (!outcome) continue;
    lines.push({ position: t.position, text: `- ${offsetText(t.offset_seconds)} (position ${t.position}) guardrail **${OUTCOME_WORDS[outcome]}** (${mdText(t.event_type)}): ${mdText(t.summary)}` });
  }
  for (const g of gates || []) {
    const off = origin === null ? '' : `${offsetText((Date.parse(gateAt(g)) - origin) / 1000)} `;
    lines.push({ position: g.position, text: `- ${off}(position ${g.position}) **${GATE_WORDS[gateVerdict(g)]}**: ${mdText(g.summary)}` });
  }
  lines.sort((a, b) => a.position - b.position);
  const out = ['', '## Guardrail verdicts and gate answers', ''];
  if (!lines.length) out.push('None recorded.');
  out.push(...lines.map((l) => l.text));
  if (gates === null) out.push('', '(The gate answers could not be read with this sign-in.)');
  return `${out.join('\n')}\n`;
}

/**
 * The SVG timeline: stages as bands, exposure as a step line, and three lanes of markers:
 * events (approvals, rejections, decisions, rollbacks, notes, annotations), guardrails
 * (breaches and verdicts, each with its word) and gate answers (allow / wait / deny).
 * `steps` are the replay's (one per event of the rollout); gate answers, from other
 * streams, sit between the events they came between in the log.
 */
export function drawTimeline(steps, timeline, plan, gates = []) {
  const W = 1000;
  const H = 300;
  const L = 78;
  const R = 12;
  const top = 24;
  const plotH = 130;
  const n = steps.length;
  const x = (i) => L + (n > 1 ? (i / (n - 1)) * (W - L - R) : (W - L - R) / 2);
  const y = (pct) => top + plotH - (pct / 100) * plotH;
  const svg = s('svg', { class: 'timeline', id: 'timeline-chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Timeline: stages as bands, exposure as a step line; events, guardrail verdicts and gate answers as markers on their own lanes' });
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

  // The lanes of markers, each named on the left.
  const lanes = { events: top + plotH + 24, guardrails: top + plotH + 56, gate: top + plotH + 88 };
  for (const [name, ly] of Object.entries(lanes)) {
    svg.append(s('text', { class: 'lane-label', x: L - 8, y: ly + 4, 'text-anchor': 'end', text: name }));
    svg.append(s('line', { class: 'lane', x1: L, y1: ly, x2: W - R, y2: ly }));
  }
  const diamond = (cls, cx, cy) => s('rect', { class: cls, x: cx - 5, y: cy - 5, width: 10, height: 10, transform: `rotate(45 ${cx} ${cy})` });
  const triangle = (cls, cx, cy, up) => s('path', { class: cls, d: up ? `M${cx},${cy - 6} L${cx + 6},${cy + 5} L${cx - 6},${cy + 5} Z` : `M${cx},${cy + 6} L${cx + 6},${cy - 5} L${cx - 6},${cy - 5} Z` });
  // Words under the markers of a lane, skipped where they would run into the previous one.
  const lastWordAt = {};
  const word = (lane, cx, text, cls) => {
    if (lastWordAt[lane] !== undefined && cx - lastWordAt[lane] < 64) return;
    lastWordAt[lane] = cx;
    // Kept inside the drawing at both ends.
    const tx = Math.min(Math.max(cx, L + 16), W - R - 16);
    svg.append(s('text', { class: `marker-word ${cls}`, x: tx, y: lanes[lane] + 19, 'text-anchor': 'middle', text }));
  };

  const index = new Map(steps.map((st, i) => [st.position, i]));
  for (const item of timeline) {
    const i = index.get(item.position);
    if (i === undefined) continue;
    const [kind, words] = markerKind(item);
    if (kind === 'event') continue;
    const cx = x(i);
    const outcome = guardrailOutcome(item);
    let shape;
    if (outcome) {
      const cy = lanes.guardrails;
      shape = kind === 'breach'
        ? diamond(`marker m-breach v-${outcome}`, cx, cy)
        : triangle(`marker m-verdict v-${outcome}`, cx, cy, outcome === 'pass');
      shape.setAttribute('data-outcome', outcome);
      shape.append(s('title', { text: `${words}: ${OUTCOME_WORDS[outcome]}, at position ${item.position}: ${item.summary}` }));
      svg.append(shape);
      word('guardrails', cx, OUTCOME_WORDS[outcome], `w-${outcome}`);
      continue;
    }
    const cy = lanes.events;
    shape = kind === 'rollback' || kind === 'rejection'
      ? diamond(`marker m-${kind}`, cx, cy)
      : s('circle', { class: `marker m-${kind}`, cx, cy, r: 5 });
    shape.append(s('title', { text: `${words} at position ${item.position}: ${item.summary}` }));
    svg.append(shape);
  }

  // Gate answers: at their place in the log between the rollout's own events.
  const positions = steps.map((st) => st.position);
  const gx = (p) => {
    if (!n) return x(0);
    if (p <= positions[0]) return x(0);
    if (p >= positions[n - 1]) return x(n - 1);
    let i = 0;
    while (positions[i + 1] < p) i += 1;
    return x(i) + ((p - positions[i]) / (positions[i + 1] - positions[i])) * (x(i + 1) - x(i));
  };
  for (const g of gates || []) {
    const verdict = gateVerdict(g);
    const cx = gx(g.position);
    const cy = lanes.gate;
    const shape = s('rect', { class: `marker m-gate g-${verdict}`, x: cx - 5, y: cy - 5, width: 10, height: 10, 'data-verdict': verdict },
      s('title', { text: `${GATE_WORDS[verdict]} at position ${g.position}: ${g.summary}` }));
    svg.append(shape);
    word('gate', cx, verdict, `w-gate-${verdict}`);
  }

  const first = steps[0];
  const last = steps[n - 1];
  if (first) svg.append(s('text', { x: L, y: H - 6, text: fmtTime(first.at) }));
  if (last) svg.append(s('text', { x: W - R, y: H - 6, 'text-anchor': 'end', text: fmtTime(last.at) }));
  const cursor = s('line', { class: 'cursor', x1: x(n - 1), y1: top - 6, x2: x(n - 1), y2: lanes.gate + 10 });
  svg.append(cursor);
  return { svg, moveCursor: (i) => { cursor.setAttribute('x1', x(i)); cursor.setAttribute('x2', x(i)); } };
}

function legend() {
  const icon = (shape) => s('svg', { width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true' }, shape);
  const circle = (cls) => icon(s('circle', { class: cls, cx: 6, cy: 6, r: 5 }));
  const diamond = (cls) => icon(s('rect', { class: cls, x: 2, y: 2, width: 8, height: 8, transform: 'rotate(45 6 6)' }));
  const up = (cls) => icon(s('path', { class: cls, d: 'M6,0 L12,11 L0,11 Z' }));
  const down = (cls) => icon(s('path', { class: cls, d: 'M6,12 L12,1 L0,1 Z' }));
  const square = (cls) => icon(s('rect', { class: cls, x: 1, y: 1, width: 10, height: 10 }));
  const item = (mark, words) => h('li', {}, mark, words);
  return h('ul', { class: 'legend timeline-legend', 'aria-label': 'Legend' },
    item(circle('m-approval'), 'approval'), item(diamond('m-rejection'), 'rejection'), item(circle('m-decision'), 'recorded decision'),
    item(diamond('m-rollback'), 'rollback'), item(circle('m-note'), 'note'), item(circle('m-annotation'), 'annotation'),
    item(diamond('m-breach'), 'guardrail breach'), item(down('m-verdict v-breach'), 'verdict: breach / not met / inconclusive'),
    item(up('m-verdict v-pass'), 'verdict: pass'), item(square('m-gate g-wait'), 'gate answer: allow / wait / deny'),
    h('li', {}, 'blue line: exposure %, shaded bands: stages'));
}

export async function postmortemPage(id) {
  const rid = encodeURIComponent(id);
  const [view, replayItems, timeline] = await Promise.all([
    api.get(`/v1/rollouts/${rid}`),
    api.all(`/v1/rollouts/${rid}/replay`, {}, 5),
    api.all(`/v1/rollouts/${rid}/timeline`, {}, 5),
  ]);
  const steps = replayItems;
  // Null when they cannot be read (the report says so); the timeline is drawn without them.
  const gates = await gateAnswers(view).catch(() => null);
  const { svg, moveCursor } = drawTimeline(steps, timeline, view.plan, gates || []);

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

  const OUTCOME_BADGE = { breach: 'bad', fail: 'fail', inconclusive: 'inconclusive', pass: 'pass' };
  const list = h('ol', { class: 'timeline-list' }, timeline.map((t) => {
    const [kind, words] = markerKind(t);
    const outcome = guardrailOutcome(t);
    let mark = '';
    if (outcome) mark = badge(OUTCOME_BADGE[outcome], `${kind === 'breach' ? 'guardrail breach' : 'verdict'}: ${OUTCOME_WORDS[outcome]}`);
    else if (kind !== 'event') mark = badge(kind === 'rollback' || kind === 'rejection' ? 'bad' : 'ok', words);
    return h('li', { 'data-kind': kind, 'data-outcome': outcome || undefined },
      h('span', { class: 'hint' }, `T${t.offset_seconds >= 0 ? '+' : '−'}${Math.abs(t.offset_seconds)} s · `),
      mark, ' ',
      `${t.event_type} by ${t.actor.id || 'system'}: `, t.summary,
      t.annotation ? h('div', { class: 'hint' }, `“${t.annotation.text}”${t.annotation.about ? ` (about ${t.annotation.about})` : ''}`) : null);
  }));
  const GATE_BADGE = { allow: 'ok', wait: 'waiting', deny: 'bad' };
  const gateList = gates === null
    ? h('p', { class: 'hint' }, 'The gate answers could not be read with this sign-in.')
    : h('ol', { class: 'timeline-list', id: 'gate-answers' }, gates.length
      ? gates.map((g) => h('li', { 'data-verdict': gateVerdict(g) },
        h('span', { class: 'hint' }, `${fmtTime(gateAt(g))} · position ${g.position} · `),
        badge(GATE_BADGE[gateVerdict(g)], GATE_WORDS[gateVerdict(g)]), ' ', g.summary))
      : [h('li', {}, 'No tool asked the gate about this rollout.')]);

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
      const report = `${(await data.text()).replace(/\n*$/, '\n')}${markdownSection(timeline, gates)}`;
      md.textContent = report;
      md.hidden = false;
      saveBlob(new Blob([report], { type: 'text/markdown' }), `postmortem-${view.feature_key}.md`);
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
    h('h2', {}, 'Events'), list,
    h('h2', {}, 'Gate answers'), gateList);
  return { node, title: `Post-mortem: ${view.title}` };
}
