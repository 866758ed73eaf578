// Inbox: the open advance requests the signed-in approver may decide.

import { h, badge, fmtTime, stageLabel } from '../dom.js';
import * as api from '../api.js';
import { quorumList, guardrails, readingsOf, soakText, decisionForm } from '../widgets.js';

const REFRESH_ON = new Set(['AdvanceRequested', 'AdvanceApproved', 'AdvanceRejected', 'AdvanceRequestWithdrawn', 'Advanced', 'PlanRevised', 'RolledBack', 'ReadingsRecorded', 'GuardrailBreached']);

async function card(item, refresh) {
  const rid = encodeURIComponent(item.rollout_id);
  const [view, events, gate] = await Promise.all([api.get(`/v1/rollouts/${rid}`), api.events(item.rollout_id), api.gate(item.rollout_id)]);
  const target = view.plan.stages[item.to_stage];
  const readings = readingsOf(events);
  return h('article', { class: 'card inbox-item', 'data-request': item.request_id, 'aria-labelledby': `t-${item.request_id}` },
    h('h2', { id: `t-${item.request_id}` }, h('a', { href: `#/rollouts/${view.id}`, class: 'rollout-title' }, view.title)),
    h('dl', { class: 'meta' },
      h('div', {}, h('dt', {}, 'Team'), h('dd', {}, view.team)),
      h('div', {}, h('dt', {}, 'Feature'), h('dd', {}, view.feature_key)),
      h('div', {}, h('dt', {}, 'Status'), h('dd', {}, badge(view.status))),
      h('div', {}, h('dt', {}, 'Advance'), h('dd', {}, `${stageLabel(view.plan, item.from_stage)} → ${stageLabel(view.plan, item.to_stage)}`)),
      h('div', {}, h('dt', {}, 'Exposure'), h('dd', {}, `${view.exposure_percentage} % now, ${target ? target.audience.percentage : '?'} % after`)),
      h('div', {}, h('dt', {}, 'Requested by'), h('dd', { class: 'requester' }, item.requested_by)),
      h('div', {}, h('dt', {}, 'Requested'), h('dd', {}, fmtTime(item.requested_at))),
      h('div', {}, h('dt', {}, 'Soak'), h('dd', { class: 'soak' }, soakText(view, gate)))),
    h('h3', {}, 'Quorum'),
    quorumList(item.required, item.approvals),
    h('h3', {}, 'Guardrails at the current stage'),
    guardrails(view, readings, false),
    decisionForm(item.rollout_id, item.request_id, refresh));
}

export async function inboxPage() {
  const list = h('div', { id: 'inbox-list' });
  const node = h('section', { 'aria-labelledby': 'inbox-title' },
    h('h1', { id: 'inbox-title' }, 'Inbox'),
    h('p', { class: 'hint' }, 'Advance requests waiting for your decision. New requests appear here as they are made.'),
    list);

  let busy = false;
  async function load() {
    if (busy) return;
    busy = true;
    try {
      const page = await api.get('/v1/approvals/inbox', { limit: 100 });
      const cards = await Promise.all(page.items.map((item) => card(item, load)));
      list.replaceChildren(...(cards.length ? cards : [h('p', { class: 'empty' }, 'Nothing waits for you.')]));
    } finally {
      busy = false;
    }
  }
  await load();
  let timer = null;
  return {
    node,
    title: 'Inbox',
    onEvent(ev, say) {
      if (!REFRESH_ON.has(ev.type)) return;
      if (ev.type === 'AdvanceRequested') say(`New advance request by ${ev.metadata.actor.id}`);
      // Keep a comment being typed: refresh only when no form has focus.
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (!list.contains(document.activeElement) || ev.type === 'AdvanceRequested') load().catch(() => {});
      }, 300);
    },
  };
}
