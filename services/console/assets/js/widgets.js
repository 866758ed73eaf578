// Pieces shared by the pages: quorum progress, guardrail status, the decision form.

import { h, badge, message, fmtDuration } from './dom.js';
import * as api from './api.js';
import { explain } from './rules.js';
import { sparkline } from './chart.js';

/** Which approval counts toward which quorum rule (one approval toward one rule only, R1). */
export function quorumProgress(required, approvals) {
  const used = new Set();
  return required.map((rule) => {
    const by = [];
    for (const a of approvals) {
      if (by.length >= rule.count) break;
      if (used.has(a.approver)) continue;
      if ((a.roles || []).some((r) => rule.roles.includes(r))) {
        used.add(a.approver);
        by.push(a.approver);
      }
    }
    return { rule, by, met: by.length >= rule.count };
  });
}

export function quorumList(required, approvals) {
  const list = h('ul', { class: 'quorum', 'aria-label': 'Quorum progress' });
  for (const p of quorumProgress(required, approvals)) {
    list.append(h('li', {},
      badge(p.met ? 'ok' : 'waiting', p.met ? 'met' : 'waiting'), ' ',
      `${p.by.length} of ${p.rule.count} ${p.rule.roles.join(' or ')}`,
      p.by.length ? ` — approved by ${p.by.join(', ')}` : ' — no approval yet'));
  }
  if (!required.length) list.append(h('li', {}, 'No approval required for this stage.'));
  return list;
}

function holds(cmp, value, threshold) {
  switch (cmp) {
    case 'gt': return value > threshold;
    case 'gte': return value >= threshold;
    case 'lt': return value < threshold;
    case 'lte': return value <= threshold;
    default: return false;
  }
}

const CMP = { gt: '>', gte: '≥', lt: '<', lte: '≤' };

/** Readings of the rollout's events: [{stage, metric, value, samples, t}] in log order. */
export function readingsOf(events) {
  const out = [];
  for (const e of events) {
    if (e.type !== 'ReadingsRecorded') continue;
    for (const r of e.payload.readings || []) {
      out.push({ stage: e.payload.stage, metric: r.metric, value: r.value, samples: r.samples, t: Date.parse(e.payload.at || e.recorded_at) });
    }
  }
  return out;
}

/** pass / fail / inconclusive of one criterion against the latest reading at the stage. */
export function evaluate(criterion, readings, stage, rollback) {
  const mine = readings.filter((r) => r.metric === criterion.metric && r.stage === stage);
  const last = mine[mine.length - 1];
  if (!last) return { status: 'inconclusive', words: 'no reading (inconclusive)', last: null, series: mine };
  if (last.samples < criterion.min_samples) {
    return { status: 'inconclusive', words: `inconclusive: ${last.samples} of ${criterion.min_samples} samples`, last, series: mine };
  }
  const h0 = holds(criterion.comparator, last.value, criterion.threshold);
  if (rollback) return h0 ? { status: 'fail', words: 'breached', last, series: mine } : { status: 'pass', words: 'not breached', last, series: mine };
  return h0 ? { status: 'pass', words: 'met', last, series: mine } : { status: 'fail', words: 'not met', last, series: mine };
}

export function criterionText(c) {
  return `${c.metric} ${CMP[c.comparator] || c.comparator} ${c.threshold} (min ${c.min_samples} samples)`;
}

/** The current stage's criteria with their status in words (and charts when asked). */
export function guardrails(view, readings, withCharts) {
  const stage = view.stage;
  const st = stage === null || stage === undefined ? null : view.plan.stages[stage];
  const wrap = h('div', { class: 'guardrails' });
  if (!st) {
    wrap.append(h('p', { class: 'hint' }, 'No stage is exposed yet: no guardrail applies.'));
    return wrap;
  }
  const rows = [
    ...st.success_criteria.map((c) => ({ c, kind: 'success', rollback: false })),
    ...st.rollback_criteria.map((c) => ({ c, kind: 'rollback', rollback: true })),
  ];
  if (!rows.length) wrap.append(h('p', { class: 'hint' }, 'This stage has no criteria.'));
  for (const { c, kind, rollback } of rows) {
    const ev = evaluate(c, readings, stage, rollback);
    const item = h('div', { class: 'criterion' },
      h('div', {}, badge(ev.status, ev.words), ' ', `${kind}: ${criterionText(c)}`,
        ev.last ? ` — latest ${ev.last.value} (${ev.last.samples} samples)` : ''));
    if (withCharts) {
      item.append(sparkline(ev.series.slice(-30).map((r) => ({ t: r.t, v: r.value })), c.threshold,
        `Recent ${c.metric} readings against the threshold ${c.threshold}`));
    }
    wrap.append(item);
  }
  return wrap;
}

/**
 * Soak time left at the current stage, in words, by the server's clock: the remaining time
 * in the gate's soak reason (`gate`, from GET /v1/rollouts/{id}/gate) when there is one,
 * else from the stage's entry time and the server's clock as its answers' `Date` says.
 */
export function soakText(view, gate) {
  const st = view.stage === null || view.stage === undefined ? null : view.plan.stages[view.stage];
  if (!st || !view.stage_entered_at) return 'no stage exposed yet';
  const soak = gate && Array.isArray(gate.reasons)
    ? gate.reasons.find((r) => r.code === 'soak' && r.stage === view.stage)
    : null;
  const left = soak && Number.isFinite(soak.remaining_seconds)
    ? soak.remaining_seconds
    : Date.parse(view.stage_entered_at) / 1000 + st.min_soak_seconds - api.serverNow() / 1000;
  return left > 0 ? `${fmtDuration(left)} of soak remaining` : 'soak time complete';
}

/** Approve / Reject with a required comment; refusals in words. */
export function decisionForm(rolloutId, requestId, onDone) {
  const area = h('textarea', { name: 'comment', required: true, 'aria-required': 'true', class: 'comment' });
  const id = `c-${requestId}`;
  area.id = id;
  const out = h('div', { 'aria-live': 'polite' });
  const approve = h('button', { type: 'submit', value: 'approve', class: 'approve' }, 'Approve');
  const reject = h('button', { type: 'submit', value: 'reject', class: 'danger reject' }, 'Reject');
  const form = h('form', { class: 'decision', 'data-request': requestId, novalidate: true },
    h('label', { for: id }, 'Comment (required)'), area,
    h('div', { class: 'row' }, approve, reject), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const decision = ev.submitter && ev.submitter.value === 'reject' ? 'reject' : 'approve';
    out.replaceChildren();
    const comment = area.value.trim();
    if (!comment) {
      out.append(message('error', 'A comment is required to approve or reject.'));
      area.focus();
      return;
    }
    approve.disabled = true;
    reject.disabled = true;
    try {
      await api.post(`/v1/rollouts/${encodeURIComponent(rolloutId)}/advance-requests/${encodeURIComponent(requestId)}/approvals`, { decision, comment });
      out.append(message('ok', decision === 'approve' ? 'Approved.' : 'Rejected.'));
      if (onDone) setTimeout(() => Promise.resolve().then(onDone).catch(() => {}), 600);
    } catch (e) {
      out.append(message('error', explain(e)));
    } finally {
      approve.disabled = false;
      reject.disabled = false;
    }
  });
  return form;
}
