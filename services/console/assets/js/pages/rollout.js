// One rollout: pipeline, readiness, contingencies, open requests, guardrails, notes, actions.

import { h, badge, message, fmtTime, fmtDuration, stageLabel } from '../dom.js';
import * as api from '../api.js';
import { hasRole, principal } from '../auth.js';
import { explain } from '../rules.js';
import { quorumList, guardrails, readingsOf, soakText, decisionForm } from '../widgets.js';

function pipeline(view) {
  return h('ol', { class: 'pipeline', 'aria-label': 'Plan stages' }, view.plan.stages.map((st, i) => {
    const cur = view.stage === i;
    const done = view.stage !== null && i < view.stage;
    return h('li', { class: done ? 'done' : '', 'aria-current': cur ? 'step' : false },
      `${i}. ${st.name}`,
      h('small', {}, `${st.audience.percentage} %${st.audience.cohorts.length ? ` + ${st.audience.cohorts.join(', ')}` : ''}`),
      h('small', {}, cur ? 'current stage' : done ? 'passed' : 'ahead'));
  }));
}

function readiness(view) {
  const items = view.plan.readiness_checklist;
  if (!items.length) return h('p', { class: 'hint' }, 'No readiness items.');
  return h('ul', { class: 'readiness' }, items.map((it) => {
    const by = view.readiness_signed[it.key];
    return h('li', {}, badge(by ? 'signed' : 'unsigned', by ? 'signed off' : 'not signed'), ' ', it.title,
      ` (owner: ${it.owner_role})`, by ? ` — by ${by}` : '');
  }));
}

function contingencies(view) {
  const rows = view.plan.contingencies;
  if (!rows.length) return h('p', { class: 'hint' }, 'No contingencies.');
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Scenario'), h('th', { scope: 'col' }, 'Action'), h('th', { scope: 'col' }, 'Owner'), h('th', { scope: 'col' }, 'Horizon'))),
    h('tbody', {}, rows.map((c) => h('tr', {}, h('td', {}, c.scenario), h('td', {}, c.action), h('td', {}, c.owner), h('td', {}, fmtDuration(c.time_horizon_seconds)))))));
}

function actionForm(label, cls, fields, submit) {
  const out = h('div', { 'aria-live': 'polite' });
  const btn = h('button', { type: 'submit', class: cls }, label);
  const form = h('form', { class: 'card action' }, ...fields, btn, out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    btn.disabled = true;
    out.replaceChildren();
    try {
      const msg = await submit();
      out.append(message('ok', msg));
    } catch (e) {
      out.append(message('error', explain(e)));
    } finally {
      btn.disabled = false;
    }
  });
  return form;
}

function actions(view, reload) {
  const id = encodeURIComponent(view.id);
  const box = h('div', { class: 'actions' });
  const manager = hasRole('release_manager');
  const sre = hasRole('sre');
  const open = ['running', 'paused', 'ready', 'rolled_back'].includes(view.status);
  if (manager && ['running', 'rolled_back', 'ready'].includes(view.status) && !view.open_request) {
    const next = view.stage === null ? 0 : view.stage + 1;
    if (next < view.plan.stages.length) {
      box.append(actionForm(`Request advance to ${stageLabel(view.plan, next)}`, 'request-advance', [], async () => {
        await api.post(`/v1/rollouts/${id}/advance-requests`, {});
        setTimeout(reload, 300);
        return 'Advance requested. Approvers see it in their inbox.';
      }));
    }
  }
  if (manager && view.open_request) {
    const req = view.requests[view.open_request];
    box.append(actionForm('Advance now (needs the approvals)', 'advance', [], async () => {
      await api.post(`/v1/rollouts/${id}/advance`, { request_id: req.id });
      setTimeout(reload, 300);
      return 'Advanced.';
    }));
  }
  if ((manager || sre) && view.status === 'running') {
    const reason = h('input', { id: 'pause-reason', required: true });
    box.append(actionForm('Pause', 'secondary pause', [h('label', { for: 'pause-reason' }, 'Reason for pausing'), reason], async () => {
      await api.post(`/v1/rollouts/${id}/pause`, { reason: reason.value.trim() });
      setTimeout(reload, 300);
      return 'Paused.';
    }));
  }
  if ((manager || sre) && view.status === 'paused') {
    box.append(actionForm('Resume', 'resume', [], async () => {
      await api.post(`/v1/rollouts/${id}/resume`, {});
      setTimeout(reload, 300);
      return 'Resumed.';
    }));
  }
  if ((manager || sre) && open && view.status !== 'ready') {
    const reason = h('input', { id: 'rollback-reason', required: true });
    const to = h('select', { id: 'rollback-to' }, h('option', { value: '' }, '0 % (before stage 0)'),
      view.plan.stages.slice(0, view.stage === null ? 0 : view.stage).map((st, i) => h('option', { value: String(i) }, `stage ${i} · ${st.name}`)));
    box.append(actionForm('Roll back', 'danger rollback', [
      h('label', { for: 'rollback-reason' }, 'Reason for the rollback (required)'), reason,
      h('label', { for: 'rollback-to' }, 'Roll back to'), to], async () => {
      const body = { reason: reason.value.trim() };
      if (to.value !== '') body.to_stage = Number(to.value);
      await api.post(`/v1/rollouts/${id}/rollback`, body);
      setTimeout(reload, 300);
      return 'Rolled back.';
    }));
  }
  if (!box.childNodes.length) box.append(h('p', { class: 'hint' }, `Your roles (${(principal() || { roles: [] }).roles.join(', ') || 'none'}) allow no action on this rollout now.`));
  return box;
}

function requests(view, gate) {
  const open = Object.values(view.requests).filter((r) => r.status === 'open');
  if (!open.length) return h('p', { class: 'hint' }, 'No open advance request.');
  return h('div', {}, open.map((r) => {
    const st = view.plan.stages[r.to_stage];
    const valid = r.approvals.filter((a) => a.plan_revision === view.plan_revision);
    return h('article', { class: 'card open-request', 'data-request': r.id },
      h('h3', {}, `Advance to ${stageLabel(view.plan, r.to_stage)}`),
      h('p', { class: 'meta' }, `Requested by ${r.requested_by} at ${fmtTime(r.requested_at)} · ${soakText(view, gate)}`),
      quorumList(st ? st.approvals : [], valid),
      hasRole('approver') ? decisionForm(view.id, r.id, () => window.dispatchEvent(new CustomEvent('rollgate:navigate'))) : null);
  }));
}

function notes(events) {
  const list = events.filter((e) => e.type === 'NoteAdded');
  if (!list.length) return h('p', { class: 'hint' }, 'No notes.');
  return h('ul', { class: 'notes' }, list.map((e) => h('li', {},
    badge('draft', e.payload.audience), ' ', e.payload.text, h('span', { class: 'hint' }, ` — ${e.payload.author}, ${fmtTime(e.payload.at)}`))));
}

function noteForm(view, reload) {
  const text = h('textarea', { id: 'note-text', required: true });
  const aud = h('select', { id: 'note-audience' }, h('option', { value: 'internal' }, 'internal'), h('option', { value: 'external' }, 'external'));
  return actionForm('Add note', 'secondary add-note', [h('label', { for: 'note-text' }, 'Note'), text, h('label', { for: 'note-audience' }, 'Audience'), aud], async () => {
    await api.post(`/v1/rollouts/${encodeURIComponent(view.id)}/notes`, { audience: aud.value, text: text.value });
    setTimeout(reload, 300);
    return 'Note added.';
  });
}

export async function rolloutPage(id) {
  const node = h('section', { class: 'rollout' });
  async function load() {
    const [view, events, gate] = await Promise.all([api.get(`/v1/rollouts/${encodeURIComponent(id)}`), api.events(id), api.gate(id)]);
    const readings = readingsOf(events);
    const reload = () => load().catch((e) => node.prepend(message('error', explain(e))));
    node.replaceChildren(
      h('h1', { id: 'rollout-title' }, view.title),
      h('dl', { class: 'meta' },
        h('div', {}, h('dt', {}, 'Status'), h('dd', {}, badge(view.status))),
        h('div', {}, h('dt', {}, 'Team'), h('dd', {}, view.team)),
        h('div', {}, h('dt', {}, 'Feature'), h('dd', {}, view.feature_key)),
        h('div', {}, h('dt', {}, 'Stage'), h('dd', { id: 'current-stage' }, stageLabel(view.plan, view.stage))),
        h('div', {}, h('dt', {}, 'Exposure'), h('dd', {}, `${view.exposure_percentage} %`)),
        h('div', {}, h('dt', {}, 'Plan revision'), h('dd', {}, String(view.plan_revision))),
        h('div', {}, h('dt', {}, 'Owner'), h('dd', {}, view.plan.owner))),
      h('p', {}, h('a', { href: `#/postmortem/${view.id}` }, 'Timeline and post-mortem'), ' · ',
        h('a', { href: `#/audit?rollout_id=${view.id}` }, 'Decisions and audit trail')),
      h('h2', {}, 'Stages'), pipeline(view),
      h('h2', {}, 'Open requests'), requests(view, gate),
      h('h2', {}, 'Actions'), actions(view, reload),
      h('div', { class: 'grid2' },
        h('div', {}, h('h2', {}, 'Readiness'), readiness(view)),
        h('div', {}, h('h2', {}, 'Guardrails'), guardrails(view, readings, true))),
      h('h2', {}, 'Contingencies'), contingencies(view),
      h('h2', {}, 'Notes'), notes(events),
      hasRole('release_manager', 'sre') ? noteForm(view, reload) : null);
    return view;
  }
  const view = await load();
  let timer = null;
  return {
    node,
    title: view.title,
    onEvent(ev) {
      if (ev.stream !== `rollout-${id}`) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (!node.contains(document.activeElement)) load().catch(() => {});
      }, 400);
    },
  };
}

/** One stored event of a rollout (audit rows link here). */
export async function eventPage(id, position) {
  const events = await api.events(id);
  const e = events.find((x) => x.position === position);
  const node = h('section', {}, h('h1', {}, `Event ${position}`),
    h('p', {}, h('a', { href: `#/rollouts/${id}` }, 'Back to the rollout')));
  if (!e) {
    node.append(message('error', 'No such event in this rollout.'));
  } else {
    node.append(h('dl', { class: 'meta' },
      h('div', {}, h('dt', {}, 'Type'), h('dd', {}, e.type)),
      h('div', {}, h('dt', {}, 'Actor'), h('dd', {}, `${e.metadata.actor.id} (${e.metadata.actor.roles.join(', ')})`)),
      h('div', {}, h('dt', {}, 'Recorded'), h('dd', {}, fmtTime(e.recorded_at))),
      h('div', {}, h('dt', {}, 'Policy version'), h('dd', {}, String(e.metadata.policy_version))),
      h('div', {}, h('dt', {}, 'Request id'), h('dd', {}, e.metadata.request_id))),
    h('p', {}, e.summary),
    h('h2', {}, 'Payload'), h('pre', {}, JSON.stringify(e.payload, null, 2)),
    h('h2', {}, 'Hash'), h('pre', {}, e.hash));
  }
  return { node, title: `Event ${position}` };
}
